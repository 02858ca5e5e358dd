"""Network isolation: a private network namespace with only loopback.

Default deny: the sandbox gets its own network namespace where nsjail brings
up ``lo`` and nothing else, so no packet can leave, and the agent's own
listeners on the host are unreachable. ``network=True`` keeps the host's
namespace for functions that opt in to outbound access.
"""

from __future__ import annotations

from runtime.jail.spec import SandboxSpec


def build(spec: SandboxSpec) -> list[str]:
    args = ["-H", spec.hostname]
    if spec.network:
        args.append("--disable_clone_newnet")
    return args
