"""Lossless at scale (issue 9): N:1 RoCEv2 incasts under PFC with every setting at its
default, on a leaf-spine of 64 hosts per leaf at 400G: 256 KiB WRITEs from N senders
into one port.

Times the engine loop (`sim.engine.run()`; compiling is setup) and records in
extra_info what the run must show: zero drops, zero timeouts and retransmissions, and
`line_rate_ratio`, the last completion over the time the bottleneck link needs for all
the frames at line rate (1.0 is the bound; the difference is one path latency). The
10,000:1 case (about 5 s a round) is marked slow, so the smoke run skips it:
`pytest benchmarks -m slow --benchmark-only`.
"""
from __future__ import annotations

import numpy as np
import pytest

import ethlink
from ethlink.sim import Simulation

from timing import time_engine

KiB = 1024
RATE = 400 * 10**9


def incast(senders: int) -> ethlink.Scenario:
    leaves = -(-(senders + 1) // 64)
    return ethlink.Scenario.from_dict({
        "name": f"incast-{senders}-to-1",
        "topology": {"kind": "leaf-spine", "leaves": leaves, "hosts_per_leaf": 64, "rate": "400G"},
        "pfc": {"priorities": [3]},
        "workload": [{"kind": "incast", "receiver": "h0", "senders": senders, "size": "256KiB", "prio": 3,
                      "transport": "roce"}]})


def line_rate_ps(senders: int, size: int = 256 * KiB, mtu: int = 4096) -> int:
    """Wire time of every data frame at the bottleneck: RoCEv2 WRITE frames (66 B of
    headers, RETH on the first) plus 20 B of preamble and gap each."""
    n, last = divmod(size, mtu)
    frames = np.array([mtu] * n + ([last] if last else [])) + 66 + 20
    frames[0] += 16
    return senders * int(sum(-(-int(f) * 8 * 10**12 // RATE) for f in frames))


@pytest.mark.parametrize("senders", [
    1000, pytest.param(10000, marks=pytest.mark.slow)])
def test_incast_lossless_at_scale(benchmark, senders):
    sc = incast(senders)
    res, best = time_engine(benchmark, lambda: Simulation(sc), rounds=3 if senders <= 1000 else 1)
    c = res.counters
    assert c["flows_done"] == senders and c["packets_dropped"] == 0 and c["timeouts"] == 0
    ratio = int(res.flows["finish_ps"].max()) / line_rate_ps(senders)
    benchmark.extra_info.update({
        "events": c["events"], "packet_hops": c["packet_hops"], "retransmitted_packets": c["retransmitted_packets"],
        "pause_frames": int(res.ports["pause_tx"].sum()), "line_rate_ratio": ratio,
        "packets_in_flight_max": c["packets_in_flight_max"]})
    if best:
        benchmark.extra_info.update({"events_per_s": c["events"] / best, "packet_hops_per_s": c["packet_hops"] / best})
