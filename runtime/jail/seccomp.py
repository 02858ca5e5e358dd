"""The system-call filter, as a kafel policy compiled by nsjail.

Calls that exist to administer the kernel, inspect other processes or build
new namespaces kill the calling process (SIGSYS). ``clone3`` answers ENOSYS
because its flags sit in memory a filter cannot read; libc then falls back
to ``clone``, whose flags are checked: a clone that asks for any new
namespace is killed, plain threads and forks are allowed.
"""

from __future__ import annotations

from runtime.jail.spec import SandboxSpec

KILLED = (
    "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount",  # kafel names umount2 (166) "umount"
    "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at",
    "reboot", "swapon", "swapoff", "acct", "quotactl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "syslog", "iopl", "ioperm", "vhangup", "lookup_dcookie",
)

# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
CLONE_NAMESPACE_FLAGS = 0x7E020080
ENOSYS = 38


def policy() -> str:
    return (
        f"ERRNO({ENOSYS}) {{ clone3 }} "
        f"KILL {{ {', '.join(KILLED)}, clone {{ (clone_flags & {CLONE_NAMESPACE_FLAGS:#x}) != 0 }} }} "
        "DEFAULT ALLOW"
    )


_POLICY = policy()


def build(spec: SandboxSpec) -> list[str]:
    return ["--seccomp_string", _POLICY]
