"""Who the sandboxed process is.

As root the agent runs each environment as its own unprivileged host uid and
gid, without a user namespace: mounts are then made with the host's full
credentials (so code under the 0700 data dir can be bind-mounted), and the
process itself holds no capability anywhere. Rootless agents cannot switch
uids, so they map their own uid into a user namespace instead.
"""

from __future__ import annotations

import os

from runtime.jail.spec import SandboxSpec

# Inside-namespace ids used in rootless mode; what the function sees.
ROOTLESS_INSIDE_ID = 1000


def build(spec: SandboxSpec) -> list[str]:
    if spec.rootless:
        if os.geteuid() == 0:
            raise ValueError("rootless sandboxes need an unprivileged agent: as root they would map to host root")
        return ["-u", f"{ROOTLESS_INSIDE_ID}", "-g", f"{ROOTLESS_INSIDE_ID}"]
    if spec.uid == 0 or spec.gid == 0:
        raise ValueError("a sandbox never runs as host root (uid/gid 0)")
    return ["--disable_clone_newuser", "-u", str(spec.uid), "-g", str(spec.gid)]
