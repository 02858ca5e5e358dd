"""Network isolation: every environment has its own network namespace.

Default deny: only ``lo`` exists inside (nsjail brings it up), so no packet
can leave and the agent's own listeners on the host are unreachable. A
function that opts in to outbound access (``network: outbound``) also gets a
macvlan interface ``vs`` on the operator's sandbox network, with its own
address and default gateway. It is still a separate namespace: the host's
loopback stays unreachable, and a macvlan cannot talk to its own parent
interface, so the host's addresses on that interface are unreachable too.
What lies beyond the gateway is the operator's network policy.
"""

from __future__ import annotations

from runtime.jail.spec import SandboxSpec


def build(spec: SandboxSpec) -> list[str]:
    args = ["-H", spec.hostname]
    out = spec.outbound
    if out is not None:
        args += ["-I", out.iface, "--macvlan_vs_ip", out.address, "--macvlan_vs_nm", out.netmask,
                 "--macvlan_vs_gw", out.gateway]
    return args
