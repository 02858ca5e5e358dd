"""Keep-alive policies: the fixed one and the hybrid histogram rule, on replayed clocks."""

import ast
import dataclasses
import math
import pathlib
import random

import pytest

from runtime.core import keepalive
from runtime.core.keepalive import (FEW_SAMPLES, HISTOGRAM, NO_PATTERN, OUT_OF_RANGE, Decision, FixedKeepAlive,
                                    HybridHistogramKeepAlive, KeepAlivePolicy)

HOUR = 3600.0


def replay(policy, function, gaps, start=1000.0):
    """record() at start, then after each gap; returns the arrival times."""
    t = start
    times = [t]
    policy.record(function, t)
    for g in gaps:
        t += g
        times.append(t)
        policy.record(function, t)
    return times


def percentile_bin(gaps, percent, bin_s):
    """The paper's percentile on 1-bin resolution, computed independently of the module."""
    ordered = sorted(gaps)
    k = max(1, math.ceil(percent * len(ordered) / 100))
    return int(ordered[k - 1] // bin_s)


def approx_decision(prewarm, keep_alive):
    return pytest.approx((prewarm, keep_alive))


def as_tuple(d):
    return (d.prewarm_after_s, d.keep_alive_s)


def cv_of_bins(gaps, bin_s, range_s):
    n_bins = math.ceil(range_s / bin_s)
    counts = [0] * n_bins
    for g in gaps:
        counts[int(g // bin_s)] += 1
    mean = sum(counts) / n_bins
    return math.sqrt(sum((c - mean) ** 2 for c in counts) / n_bins) / mean


def test_decision_validates_and_gives_the_reaper_its_times():
    d = Decision(30.0, 90.0)
    assert not d.keep_loaded
    assert d.load_at(100.0) == 130.0
    assert d.expires_at(100.0) == 220.0
    assert Decision(0, 600).keep_loaded and Decision(0, 600).expires_at(5.0) == 605.0
    for bad in ((-1.0, 10.0), (0.0, -0.5), (0.0, math.inf), (math.nan, 1.0)):
        with pytest.raises(ValueError):
            Decision(*bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.keep_alive_s = 1.0


def test_fixed_policy_keeps_every_function_loaded_for_its_keep_alive():
    default = FixedKeepAlive()
    assert default.decide("never-seen") == Decision(0.0, 600.0)
    replay(default, "f", [60.0] * 50)
    assert default.decide("f") == Decision(0.0, 600.0)
    assert default.statistics() == {}
    one_minute = FixedKeepAlive(60)
    assert one_minute.decide("f") == Decision(0.0, 60.0)
    assert default.name != one_minute.name
    with pytest.raises(ValueError):
        FixedKeepAlive(-1)


def test_both_policies_satisfy_the_protocol():
    assert isinstance(FixedKeepAlive(), KeepAlivePolicy)
    assert isinstance(HybridHistogramKeepAlive(), KeepAlivePolicy)
    assert HybridHistogramKeepAlive().name == "hybrid-histogram"


def test_hybrid_falls_back_until_it_has_min_samples_gaps():
    policy = HybridHistogramKeepAlive(min_samples=10, fallback=FixedKeepAlive(123))
    assert policy.decide("new") == Decision(0.0, 123.0)
    replay(policy, "f", [300.0] * 9)                  # 10 arrivals, 9 gaps
    assert policy.decide("f") == Decision(0.0, 123.0)
    assert policy.statistics()["f"].pattern == FEW_SAMPLES
    policy.record("f", 1000.0 + 10 * 300.0)           # the 10th gap
    assert policy.statistics()["f"].pattern == HISTOGRAM
    # 300 s gaps: bin 5 with 1-minute bins; pre-warm at its lower edge less 10 %,
    # keep alive until its upper edge plus 10 %.
    assert as_tuple(policy.decide("f")) == approx_decision(270.0, 396.0 - 270.0)


def test_periodic_function_prewarms_just_before_the_next_call_and_keeps_it_briefly():
    rng = random.Random(7)
    bin_s = 1.0                                       # the paper's minute bins, scaled to a 60 s timer
    policy = HybridHistogramKeepAlive(bin_s=bin_s)
    arrivals = [60.0 * k + rng.uniform(-1.0, 1.0) for k in range(200)]
    for t in arrivals:
        policy.record("timer", t)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    d = policy.decide("timer")
    stats = policy.statistics()["timer"]
    assert stats.pattern == HISTOGRAM and stats.samples == len(gaps) and stats.out_of_range == 0
    # Just under 60 s: below every gap seen (loaded before the next call), within the 10 % margin.
    assert 0.9 * (min(gaps) - bin_s) <= d.prewarm_after_s < min(gaps)
    assert 50.0 < d.prewarm_after_s < 58.0
    # Short keep-alive that still covers the latest arrival seen.
    assert d.prewarm_after_s + d.keep_alive_s >= max(gaps)
    assert d.keep_alive_s < 20.0
    # Exactly the rule: head bin's lower edge - 10 %, tail bin's upper edge + 10 %.
    head, tail = percentile_bin(gaps, 5, bin_s), percentile_bin(gaps, 99, bin_s)
    assert d.prewarm_after_s == pytest.approx(head * bin_s * 0.9)
    assert d.prewarm_after_s + d.keep_alive_s == pytest.approx((tail + 1) * bin_s * 1.1)


def test_head_in_first_bin_keeps_the_environment_loaded_right_away():
    # The same 60 s timer with the paper's own 1-minute bins: gaps of 59-61 s
    # straddle bins 0 and 1, so the head is bin 0: no unloading.
    rng = random.Random(8)
    policy = HybridHistogramKeepAlive()
    for k in range(100):
        policy.record("timer", 60.0 * k + rng.uniform(-1.0, 1.0))
    d = policy.decide("timer")
    assert d.keep_loaded
    assert d.keep_alive_s == pytest.approx(2 * 60.0 * 1.1)
    assert policy.statistics()["timer"].head_s == 0.0


def test_uniformly_random_gaps_over_the_range_have_no_pattern_and_fall_back():
    rng = random.Random(1)
    policy = HybridHistogramKeepAlive(fallback=FixedKeepAlive(600))
    gaps = [rng.uniform(0.0, 4 * HOUR - 1) for _ in range(2000)]
    replay(policy, "f", gaps)
    stats = policy.statistics()["f"]
    assert stats.cv == pytest.approx(cv_of_bins(gaps, 60.0, 4 * HOUR))
    assert stats.cv < 2.0
    assert stats.pattern == NO_PATTERN
    assert policy.decide("f") == Decision(0.0, 600.0)


def test_uniformly_random_gaps_concentrated_in_the_range_keep_a_wide_window():
    # Uniform over 20 minutes (1.5 to 21.5 min) fills 21 of 240 bins: CV ~ 3.2 >= 2,
    # so the paper's rule trusts the histogram, and the window spans nearly all of it.
    rng = random.Random(2)
    policy = HybridHistogramKeepAlive()
    gaps = [rng.uniform(90.0, 1290.0) for _ in range(2000)]
    replay(policy, "f", gaps)
    stats = policy.statistics()["f"]
    assert stats.cv == pytest.approx(cv_of_bins(gaps, 60.0, 4 * HOUR))
    assert stats.cv >= 2.0 and stats.pattern == HISTOGRAM
    d = policy.decide("f")
    head, tail = percentile_bin(gaps, 5, 60.0), percentile_bin(gaps, 99, 60.0)
    assert (head, tail) == (2, 21)                     # 5th pct ~150 s, 99th pct ~1278 s
    assert d.prewarm_after_s == pytest.approx(2 * 60.0 * 0.9)
    assert d.prewarm_after_s + d.keep_alive_s == pytest.approx(22 * 60.0 * 1.1)
    assert d.keep_alive_s > 1200.0


def test_too_many_out_of_range_gaps_fall_back():
    policy = HybridHistogramKeepAlive(fallback=FixedKeepAlive(600))
    # 5 of 10 gaps beyond 4 hours (exactly 4 h counts as beyond): half -> fallback.
    replay(policy, "rare", [600.0] * 5 + [4 * HOUR] + [6 * HOUR] * 4)
    stats = policy.statistics()["rare"]
    assert (stats.samples, stats.out_of_range) == (5, 5)
    assert stats.pattern == OUT_OF_RANGE
    assert policy.decide("rare") == Decision(0.0, 600.0)
    # 4 of 10: the in-range gaps decide.
    replay(policy, "mostly", [600.0] * 6 + [6 * HOUR] * 4)
    assert policy.statistics()["mostly"].pattern == HISTOGRAM
    assert as_tuple(policy.decide("mostly")) == approx_decision(540.0, 660 * 1.1 - 540.0)


def test_concurrent_and_out_of_order_arrivals_are_gaps_of_zero():
    policy = HybridHistogramKeepAlive(min_samples=1)
    policy.record("f", 100.0)
    policy.record("f", 100.0)
    policy.record("f", 40.0)      # a racing caller stamped earlier: a gap of 0, not of 60 s
    stats = policy.statistics()["f"]
    assert (stats.invocations, stats.samples, stats.head_s, stats.tail_s) == (3, 2, 0.0, 60.0)
    assert as_tuple(policy.decide("f")) == approx_decision(0.0, 66.0)


def test_percentiles_are_nearest_rank():
    # 1 short gap of 20 is exactly the 5th percentile: the head is bin 0, keep loaded.
    policy = HybridHistogramKeepAlive()
    replay(policy, "f", [10.0] + [300.0] * 19)
    assert policy.statistics()["f"].head_s == 0.0
    assert as_tuple(policy.decide("f")) == approx_decision(0.0, 396.0)
    # 1 of 21 is below it: the head moves to the 300 s bin.
    policy.record("f", 1000.0 + 10.0 + 20 * 300.0)
    assert policy.statistics()["f"].head_s == 300.0
    assert as_tuple(policy.decide("f")) == approx_decision(270.0, 396.0 - 270.0)


def test_forget_clears_what_was_learned():
    policy = HybridHistogramKeepAlive(fallback=FixedKeepAlive(600))
    replay(policy, "f", [300.0] * 20)
    replay(policy, "g", [300.0] * 20)
    assert not policy.decide("f").keep_loaded
    policy.forget("f")
    policy.forget("never-seen")
    assert set(policy.statistics()) == {"g"}
    assert policy.decide("f") == Decision(0.0, 600.0)
    policy.record("f", 99999.0)   # starts over: no gap from the forgotten history
    assert policy.statistics()["f"].samples == 0
    assert not policy.decide("g").keep_loaded


def test_statistics_report_what_was_learned():
    policy = HybridHistogramKeepAlive()
    replay(policy, "five-min", [300.0] * 30 + [5 * HOUR])
    replay(policy, "once", [])
    stats = policy.statistics()
    five = stats["five-min"]
    assert isinstance(five, keepalive.FunctionStatistics)
    assert (five.invocations, five.samples, five.out_of_range) == (32, 30, 1)
    assert five.pattern == HISTOGRAM
    assert (five.head_s, five.tail_s) == (300.0, 360.0)
    assert five.cv == pytest.approx(math.sqrt(239))        # one full bin of 240
    assert five.decision == policy.decide("five-min")
    once = stats["once"]
    assert (once.invocations, once.samples, once.cv, once.head_s, once.pattern) == (1, 0, 0.0, None, FEW_SAMPLES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        five.samples = 0
    # New arrivals invalidate the cached decision: 3 gaps of 30 s of 33 move the head to bin 0.
    t = 1000.0 + 30 * 300.0 + 5 * HOUR
    for k in range(1, 4):
        policy.record("five-min", t + 30.0 * k)
    assert policy.statistics()["five-min"].head_s == 0.0
    assert policy.decide("five-min").keep_loaded


def test_hybrid_rejects_nonsense_parameters():
    for kwargs in ({"bin_s": 0}, {"range_s": 10, "bin_s": 60}, {"head": 50, "tail": 10},
                   {"margin": 1.0}, {"oob_threshold": 0}, {"min_samples": 0}):
        with pytest.raises(ValueError):
            HybridHistogramKeepAlive(**kwargs)


def test_module_is_pure_stdlib_logic_without_a_clock():
    tree = ast.parse(pathlib.Path(keepalive.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= {"__future__", "dataclasses", "math", "typing"}, imported
