"""EthLink speed: the 64-GPU multi-plane pod (ethlink-mixed: Load/Store and RDMA, CBFC,
LLR) and Load/Store under a background all-to-all (ls-under-rdma, both classes).

As in test_bench_engine.py only the engine's event loop is timed (`sim.engine.run()`,
one call, no progress callbacks) on a freshly compiled Simulation per round; compiling
and building the Result are not timed. Each benchmark records in `extra_info`, from its
fastest round:

- events_per_s           every event the loop popped
- packet_hops_per_s      frames that crossed one link
- ls_ops_per_wall_s      Load/Store operations completed per second of wall time
- ls_ops_per_sim_s       the same per simulated second (the fabric's achieved rate)
- sim_ps_per_wall_s      simulated picoseconds per wall second

Run with `.venv/bin/python -m pytest -q benchmarks/test_bench_ethlink.py --benchmark-only
--benchmark-columns=min,mean,rounds`. Never asserted as wall time.
"""
from __future__ import annotations

from ethlink import scenarios
from ethlink.sim import Simulation
from timing import time_engine


def _bench(benchmark, make_sim, rounds, warmup=0):
    res, best = time_engine(benchmark, make_sim, rounds, warmup)
    s = res.summary
    ls = s["ls"] or {}
    benchmark.extra_info.update({
        "events": s["events"], "packet_hops": s["packet_hops"], "sim_time_ps": s["sim_time_ps"],
        "ls_ops": ls.get("count", 0), "flows": s["flows_total"],
        "ls_ops_per_sim_s": ls.get("count", 0) / (s["sim_time_ps"] / 1e12) if s["sim_time_ps"] else None,
        "ls_p99_ps": ls.get("p99_ps"),
    })
    if best:
        benchmark.extra_info.update({
            "events_per_s": s["events"] / best,
            "packet_hops_per_s": s["packet_hops"] / best,
            "ls_ops_per_wall_s": ls.get("count", 0) / best,
            "sim_ps_per_wall_s": s["sim_time_ps"] / best,
        })
    # Sanity, not speed: everything completed.
    assert s["stop"] == "empty"
    assert s["flows_completed"] == s["flows_total"]
    assert ls.get("count") == ls.get("total")
    return res


def test_ethlink_mixed_pod(benchmark):
    """The built-in ethlink-mixed: 64 GPUs x 8 planes of 400G, MoE all-to-all of 256 KiB
    RDMA WRITEs and 2000 Load/Store ops per GPU, CBFC on both classes, LLR at BER 1e-8."""
    sc = scenarios.load("ethlink-mixed")
    _bench(benchmark, lambda: Simulation(sc), rounds=3, warmup=1)


def test_ls_under_rdma_strict_class(benchmark):
    """The built-in ls-under-rdma: Load/Store in its own strict-priority class."""
    sc = scenarios.load("ls-under-rdma")
    _bench(benchmark, lambda: Simulation(sc), rounds=5, warmup=1)


def test_ls_under_rdma_shared_class(benchmark):
    """ls-under-rdma with `--set ls.prio=3`: Load/Store queued behind the RDMA class."""
    sc = scenarios.load("ls-under-rdma", ["ls.prio=3"])
    _bench(benchmark, lambda: Simulation(sc), rounds=5, warmup=1)
