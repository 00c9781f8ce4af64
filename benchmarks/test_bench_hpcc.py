"""HPCC cost: the built-in incast-hpcc (64 x 4 MiB RoCEv2 WRITEs into one 400G port, HPCC
with INT records on every data frame, an ACK per packet echoing them), in events and
packet-hops per second of the event loop; compiling the scenario is setup, as in
test_bench_roce.py.

Nothing about speed is asserted (benchmarks are compared run to run, never asserted as
wall time); the run itself must end as the scenario promises (every flow complete, no
drop, no pause frame), so a benchmark of a broken run cannot pass. extra_info records
events, events_per_s, packet_hops_per_s and the INT records the switches appended.
"""
from __future__ import annotations

from ethlink import scenarios
from ethlink.sim import Simulation
from timing import time_engine

ROUNDS = 10


def test_incast_hpcc(benchmark):
    sc = scenarios.load("incast-hpcc")
    res, best = time_engine(benchmark, lambda: Simulation(sc), ROUNDS, 1)
    c = res.counters
    assert c["flows_done"] == 64 and c["packets_dropped"] == 0
    assert int(res.ports["pause_tx"].sum()) == 0
    assert c["hpcc_int_records"] == c["packets_delivered"]          # one switch on every path
    if best is None:
        return
    benchmark.extra_info.update({"events": c["events"], "events_per_s": c["events"] / best,
                                 "packet_hops_per_s": c["packet_hops"] / best,
                                 "int_records": c["hpcc_int_records"]})
