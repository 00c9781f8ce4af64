"""Engine speed: the 64:1 incast, the 1024-host fat-tree all-to-all (and a k=8 one), a
heap-bound run of tiny events, and the leaf-spine permutation.

Only the engine's event loop is timed (`sim.engine.run()`, one call, no progress
callbacks); building the scenario (routing, ideal FCTs) is setup, and building the Result
(summary aggregates) comes after. Each benchmark records in `extra_info`, from
its fastest round:

- events_per_s           every event the loop popped
- packet_events_per_s    events that move a packet: one transmit-done and one receive per
                         frame per link, i.e. 2 x packet_hops (the rest are flow starts
                         and protocol timers)
- packet_hops_per_s      frames that crossed one link (summary["packet_hops"])
- packets_in_flight_max  most packets alive at once (queued or on a wire)
- bytes_per_packet_model PACKET_BYTES (the C struct; queues are intrusive lists through
                         Packet.next and link FIFOs through Packet.rx_next, so a queued
                         packet or one on a wire costs nothing more, but for each link's
                         earliest arrival, whose event (EVENT_BYTES) sits in the heap)
- rss_bytes_per_inflight_packet (incast only) peak-RSS growth during run() divided by
                         packets_in_flight_max, measured in a fresh subprocess

Run with `make bench` (pytest benchmarks --benchmark-only). Never asserted as wall time:
results are compared run to run (pytest-benchmark --benchmark-compare).
"""
from __future__ import annotations

import json
import subprocess
import sys

from ethlink import _engine, scenarios
from ethlink.sim import Simulation
from timing import time_engine
import ethlink


def _bench(benchmark, make_sim, rounds, warmup=0):
    """Time the event loop of a fresh, compiled Simulation per round; fill extra_info."""
    res, best = time_engine(benchmark, make_sim, rounds, warmup)
    s, c = res.summary, res.counters
    packet_events = 2 * s["packet_hops"]
    benchmark.extra_info.update({
        "events": s["events"],
        "packet_events": packet_events,
        "packet_hops": s["packet_hops"],
        "flows": s["flows_total"],
        "packets_in_flight_max": c["packets_in_flight_max"],
        "bytes_per_packet_model": _engine.PACKET_BYTES,
    })
    if best:
        benchmark.extra_info.update({
            "events_per_s": s["events"] / best,
            "packet_events_per_s": packet_events / best,
            "packet_hops_per_s": s["packet_hops"] / best,
        })
    # Sanity, not speed: the run did what it should.
    assert s["stop"] == "empty"
    assert s["bytes_delivered"] + s["bytes_dropped"] == s["bytes_sent"]
    assert s["packets_in_flight"] == 0
    return res


_RSS_PROBE = r"""
import json, sys
from ethlink import scenarios
from ethlink.sim import Simulation

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

sim = Simulation(scenarios.load(sys.argv[1], json.loads(sys.argv[2])))
with open("/proc/self/clear_refs", "w") as f:      # reset VmHWM to the current RSS
    f.write("5")
base = status("VmRSS")
sim.engine.run()
c = sim.engine.counters()
print(json.dumps({"base": base, "peak": status("VmHWM"), "inflight": c["packets_in_flight_max"],
                  "pool": c["pool_capacity"], "heap": c["heap_capacity"]}))
"""


def rss_per_inflight_packet(name: str, overrides: list[str]) -> dict:
    """Peak RSS growth over run() / packets in flight at most, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, name, json.dumps(overrides)],
                         capture_output=True, text=True, check=True, timeout=600)
    m = json.loads(out.stdout)
    m["bytes_per_inflight_packet"] = (m["peak"] - m["base"]) / max(1, m["inflight"])
    return m


# ---------------------------------------------------------------------------------------

def test_incast_64_to_1(benchmark):
    """The built-in incast-raw: 64 senders x 1 MiB into one 400G port, dynamic threshold."""
    sc = scenarios.load("incast-raw")
    _bench(benchmark, lambda: Simulation(sc), rounds=30, warmup=2)
    m = rss_per_inflight_packet("incast-raw", [])
    deep = rss_per_inflight_packet("incast-raw", [
        "workload.0.size=4MiB", "switch.buffer=2GiB", "switch.threshold=\"static\""])
    benchmark.extra_info.update({
        "rss_bytes_per_inflight_packet": m["bytes_per_inflight_packet"],
        "rss_delta_bytes": m["peak"] - m["base"],
        "deep_buffer_inflight_max": deep["inflight"],
        "deep_buffer_rss_delta_bytes": deep["peak"] - deep["base"],
        "deep_buffer_rss_bytes_per_inflight_packet": deep["bytes_per_inflight_packet"],
        "deep_buffer_pool_capacity": deep["pool"],
    })


def test_heap_bound_tiny_events(benchmark):
    """Raw event throughput: a 256-host star, all-to-all of 1-byte flows (one 64 B frame
    each, 65 280 flows); every event does almost no work, so the heap and the loop
    dominate. (The engine has no heap-only entry point.)"""
    sc = ethlink.Scenario.from_dict({
        "name": "heap-bound", "topology": {"kind": "star", "hosts": 256},
        "workload": [{"kind": "alltoall", "size": 1}]})
    _bench(benchmark, lambda: Simulation(sc), rounds=5, warmup=1)


def test_permutation_leafspine(benchmark):
    """The built-in permutation-leafspine: 128 hosts x 4 MiB on a 2:1 leaf-spine."""
    sc = scenarios.load("permutation-leafspine")
    _bench(benchmark, lambda: Simulation(sc), rounds=5, warmup=1)


def test_alltoall_fattree_k8(benchmark):
    """All-to-all, 16 KiB per pair, on a k=8 fat-tree (128 hosts, 16 256 flows)."""
    sc = scenarios.load("alltoall-fattree", ["topology.k=8"])
    _bench(benchmark, lambda: Simulation(sc), rounds=3)


def test_alltoall_fattree_1024(benchmark):
    """The built-in alltoall-fattree: k=16, 1024 hosts, 1 047 552 flows of 16 KiB. One
    round. Under --benchmark-disable (the smoke test) on k=8: the full run takes 30 s."""
    sc = scenarios.load("alltoall-fattree", ["topology.k=8"] if benchmark.disabled else [])
    _bench(benchmark, lambda: Simulation(sc), rounds=1)
