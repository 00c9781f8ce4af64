"""The engine timing harness shared by the benchmark suites: a fresh, compiled
Simulation per round (compiling is setup, not timed), one `engine.run()` timed."""
import time

from ethlink.sim import Result, Simulation


def time_engine(benchmark, make_sim, rounds, warmup=0):
    """Run pytest-benchmark over `make_sim().engine.run()`; returns (Result of the last
    round, fastest round in s or None under --benchmark-disable)."""
    last = {}

    def setup():
        sim = make_sim()
        last["sim"] = sim
        return (sim,), {}

    def run(sim):
        last["stop"] = sim.engine.run()

    benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1, warmup_rounds=warmup)
    # With --benchmark-disable (a smoke run) there are no timings: report counts only.
    best = benchmark.stats.stats.min if benchmark.stats else None
    return Result(last["sim"], best or 0.0, last["stop"]), best


def time_loop(sc):
    """One compiled Simulation of scenario `sc`, its `engine.run()` timed by hand: (wall s,
    engine counters). For suites that alternate scenarios round by round themselves."""
    sim = Simulation(sc)
    t0 = time.perf_counter()
    stop = sim.engine.run()
    wall = time.perf_counter() - t0
    assert stop == "empty"
    return wall, sim.engine.counters()
