"""Ultra Ethernet transport cost: the built-in permutation-uet (32 UET flows sprayed per
packet, an ACK_CC with SACK bitmap per data packet) against the same permutation over
RoCEv2 RC with per-flow ECMP, and incast-trim (trimming, NACKs, selective retransmissions),
in events per second.

Only `sim.engine.run()` is timed, as in test_bench_roce.py; compiling is setup. The
benchmark fixture times permutation-uet; a separate loop alternates UET and RoCE round by
round and keeps each one's fastest round, so machine-load drift hits both alike.
extra_info records each case's events, events_per_s and packet_hops_per_s and the ratio
`uet_vs_roce_events_per_s`. Nothing is asserted about speed (never wall time in tests);
the runs are checked to be the runs they claim to be.
"""
from __future__ import annotations

from ethlink import scenarios
from ethlink.sim import Simulation
from timing import time_alternating, time_engine

ROUNDS = 20


def test_uet_permutation_and_trim(benchmark):
    uet = scenarios.load("permutation-uet")
    roce = scenarios.load("permutation-uet", ["workload.0.transport=roce"])
    trim = scenarios.load("incast-trim")
    res, best = time_engine(benchmark, lambda: Simulation(uet), ROUNDS, 2)
    c = res.counters
    assert c["flows_done"] == 32 and c["uet_acks"] > 0

    timed = best is not None
    counters, info = time_alternating((("roce", roce), ("uet", uet), ("trim", trim)), ROUNDS if timed else 1)
    assert counters["trim"]["uet_trimmed"] > 0 and counters["trim"]["timeouts"] == 0
    info["uet_vs_roce_events_per_s"] = info["uet_events_per_s"] / info["roce_events_per_s"]
    if timed:
        info["events_per_s"] = counters["uet"]["events"] / best
        benchmark.extra_info.update(info)
