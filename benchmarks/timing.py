"""The engine timing harness shared by the benchmark suites: a fresh, compiled
Simulation per round (compiling is setup, not timed), one `engine.run()` timed."""
from ethlink.sim import Result


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
