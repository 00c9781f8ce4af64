"""Issue 11's scenarios, engine-only and whole process, and the phases of the
1-million-flow all-to-all.

- `incast127-fattree` (benchmarks/scenarios/): k=8 fat-tree, 128 hosts at 100G, 1 us links,
  MTU 4096; a 127:1 incast of 1 MiB RoCEv2 WRITEs with PFC (the short run).
- `permutation1024-fattree`: k=16 fat-tree, 1024 hosts, the same links; a permutation of
  2,000,000 B per host (the large run).
- `alltoall-fattree` (built-in, 1,047,552 flows): compile, engine and write phases.

Engine-only cases time one `engine.run()` per freshly compiled Simulation (timing.py).
Whole-process cases time `ethlink run SCENARIO -o DIR --quiet` in a subprocess (interpreter
start, imports, compile, run, Parquet tables and summary.json), and record the process's
peak RSS from `resource.getrusage(RUSAGE_CHILDREN)` in a wrapper process whose only child
is that run. extra_info carries packet_hops_per_s and the bytes per packet in flight
(peak-RSS growth of the run over the most packets in flight, and the C struct model).

Under --benchmark-disable (tests/test_benchmarks_smoke.py) every case runs once on a
scaled-down scenario (`SMOKE`), so the smoke test stays fast.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from ethlink import _engine, scenarios
from ethlink.sim import Result, Simulation
from test_bench_engine import rss_per_inflight_packet
from timing import time_engine

HERE = Path(__file__).resolve().parent / "scenarios"
INCAST = str(HERE / "incast127-fattree.toml")
PERMUTATION = str(HERE / "permutation1024-fattree.toml")
ETHLINK = str(Path(sys.executable).with_name("ethlink"))
SMOKE = {
    INCAST: ["workload.0.senders=15", "workload.0.size=64KiB"],
    PERMUTATION: ["topology.k=4", "workload.0.size=64KiB"],
    "alltoall-fattree": ["topology.k=4"],
}

_PEAK = r"""
import resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
el = time.perf_counter() - t
assert p.returncode == 0, p.stderr
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, el)
"""


def _sets(benchmark, name) -> list[str]:
    return SMOKE[name] if benchmark.disabled else []


def _engine_case(benchmark, name, rounds):
    sc = scenarios.load(name, _sets(benchmark, name))
    res, best = time_engine(benchmark, lambda: Simulation(sc), rounds)
    s, c = res.summary, res.counters
    assert s["stop"] == "empty" and s["flows_completed"] == s["flows_total"]
    benchmark.extra_info.update({
        "events": s["events"], "packet_hops": s["packet_hops"], "flows": s["flows_total"],
        "packets_in_flight_max": c["packets_in_flight_max"],
        "bytes_per_packet_model": _engine.PACKET_BYTES,
    })
    if best:
        benchmark.extra_info.update({"events_per_s": s["events"] / best, "packet_hops_per_s": s["packet_hops"] / best})
        m = rss_per_inflight_packet(name, _sets(benchmark, name))
        benchmark.extra_info["rss_bytes_per_inflight_packet"] = m["bytes_per_inflight_packet"]


def _process_case(benchmark, name, tmp_path, rounds):
    cmd = [ETHLINK, "run", name, "-o", str(tmp_path / "o"), "--quiet"]
    cmd += [a for s in _sets(benchmark, name) for a in ("--set", s)]
    benchmark.pedantic(lambda: subprocess.run(cmd, check=True, capture_output=True), rounds=rounds, iterations=1)
    out = subprocess.run([sys.executable, "-c", _PEAK, *cmd], capture_output=True, text=True, check=True)
    peak, wall = out.stdout.split()
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["flows_completed"] == s["flows_total"]
    benchmark.extra_info.update({"peak_rss_bytes": int(peak), "wall_s_with_rss_probe": float(wall),
                                 "engine_wall_s": s["wall_s"], "packet_hops": s["packet_hops"],
                                 "summary_json_bytes": (tmp_path / "o" / "summary.json").stat().st_size})


def test_incast127_fattree_engine(benchmark):
    _engine_case(benchmark, INCAST, rounds=5)


def test_incast127_fattree_process(benchmark, tmp_path):
    _process_case(benchmark, INCAST, tmp_path, rounds=5)


def test_permutation1024_fattree_engine(benchmark):
    _engine_case(benchmark, PERMUTATION, rounds=1)


def test_permutation1024_fattree_process(benchmark, tmp_path):
    _process_case(benchmark, PERMUTATION, tmp_path, rounds=1)


def test_alltoall_fattree_compile(benchmark):
    """Compile only: validation done, Simulation() (routes, flows, ideal FCTs, QPs, engine)."""
    sc = scenarios.load("alltoall-fattree", _sets(benchmark, "alltoall-fattree"))
    sim = benchmark.pedantic(lambda: Simulation(sc), rounds=1, iterations=1)
    benchmark.extra_info["flows"] = len(sim.compiled.flows)


def test_alltoall_fattree_write(benchmark, tmp_path):
    """Write only: the Result (summary aggregates), then flows/qps/ports.parquet and
    summary.json, after a run (setup)."""
    from ethlink.cli import _clean_nan, write_json_atomic

    sc = scenarios.load("alltoall-fattree", _sets(benchmark, "alltoall-fattree"))

    def setup():
        sim = Simulation(sc)
        t = time.perf_counter()
        stop = sim.engine.run()
        return (sim, time.perf_counter() - t, stop), {}

    def write(sim, wall, stop):
        res = Result(sim, wall, stop)
        res.write_tables(tmp_path)
        write_json_atomic(tmp_path / "summary.json", _clean_nan(res.summary))

    benchmark.pedantic(write, setup=setup, rounds=1, iterations=1)
    benchmark.extra_info.update({
        "flows_parquet_bytes": (tmp_path / "flows.parquet").stat().st_size,
        "summary_json_bytes": (tmp_path / "summary.json").stat().st_size,
    })
