"""The system-call filter, as a kafel policy compiled by nsjail.

Calls that exist to administer the kernel, inspect other processes, build
new namespaces or bypass the filter itself (io_uring submits operations that
seccomp never sees) kill the calling process (SIGSYS). ``clone3`` answers
ENOSYS because its flags sit in memory a filter cannot read; libc then falls
back to ``clone``, whose flags are checked: a clone that asks for any new
namespace is killed, plain threads and forks are allowed.

The x32 ABI shares x86-64's audit architecture, so a filter keyed on names
alone lets ``nr | 0x40000000`` through: every killed call's x32 alias is
killed too (on kernels built without x32 they would answer ENOSYS anyway).
"""

from __future__ import annotations

import platform

from runtime.jail.spec import SandboxSpec

# kafel's name for umount2 (166) is "umount".
KILLED_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
    "mount": 165, "umount": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "move_mount": 429, "open_tree": 428,
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "keyctl": 250, "add_key": 248, "request_key": 249,
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179,
    "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
    "syslog": 103, "iopl": 172, "ioperm": 173, "vhangup": 153, "lookup_dcookie": 212,
}
KILLED = tuple(KILLED_X86_64)
X32_BIT = 0x40000000
CLONE_X86_64 = 56

# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
CLONE_NAMESPACE_FLAGS = 0x7E020080
ENOSYS = 38


def policy(machine: str | None = None) -> str:
    killed = list(KILLED)
    if (machine or platform.machine()) == "x86_64":
        killed += [f"SYSCALL[{nr | X32_BIT}]" for nr in (*KILLED_X86_64.values(), CLONE_X86_64)]
    return (
        f"ERRNO({ENOSYS}) {{ clone3 }} "
        f"KILL {{ {', '.join(killed)}, clone {{ (clone_flags & {CLONE_NAMESPACE_FLAGS:#x}) != 0 }} }} "
        "DEFAULT ALLOW"
    )


_POLICY = policy()


def build(spec: SandboxSpec) -> list[str]:
    return ["--seccomp_string", _POLICY]
