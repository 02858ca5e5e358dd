"""What tests and benchmarks read from /proc about an agent's sandboxes."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, whichever of its threads started them (the
    agent's spawner thread starts some); [] once it is gone."""
    kids = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass  # the thread ended
    return kids


def mapping_kib(pid: int, suffix: str, keys: tuple[str, ...] = ("Rss", "Pss")) -> dict[str, int]:
    """``keys`` of /proc/<pid>/smaps (KiB), summed over every mapping of a file
    whose path ends with ``suffix``; zeros once the process is gone."""
    totals = dict.fromkeys(keys, 0)
    inside = False
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return totals
    for line in text.splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):  # a mapping's header
            inside = len(head) >= 6 and head[5].endswith(suffix)
        elif inside and head and head[0][:-1] in totals:
            totals[head[0][:-1]] += int(head[1])
    return totals


def sandbox_pids(function: str) -> dict[str, list[int]]:
    """Processes of each live environment of ``function`` (v1 pids cgroup),
    by environment directory: in that directory when the sandbox joined it,
    or in nsjail's NSJAIL.<pid> inside it (an nsjail without --cgroup_procs)."""
    import glob
    live: dict[str, list[int]] = {}
    for env in glob.glob(f"/sys/fs/cgroup/pids/runtime-agent/*/{function}-*"):
        pids: list[int] = []
        for procs in (f"{env}/cgroup.procs", *glob.glob(f"{env}/NSJAIL.*/cgroup.procs")):
            try:
                pids += [int(p) for p in Path(procs).read_text().split()]
            except OSError:
                pass  # removed meanwhile
        if pids:
            live[env] = pids
    return live
