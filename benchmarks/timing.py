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


def time_alternating(named, rounds):
    """Scenarios (name, scenario) timed in turn, round after round (time_loop), so load
    on the machine falls on all alike: (each name's engine counters, extra_info entries
    <name>_events, _events_per_s, _packet_hops_per_s and _best_s from its fastest round)."""
    best = {name: float("inf") for name, _ in named}
    counters = {}
    for _ in range(rounds):
        for name, sc in named:
            wall, counters[name] = time_loop(sc)
            best[name] = min(best[name], wall)
    info = {}
    for name, _ in named:
        ev, hops = counters[name]["events"], counters[name]["packet_hops"]
        info.update({f"{name}_events": ev, f"{name}_events_per_s": ev / best[name],
                     f"{name}_packet_hops_per_s": hops / best[name], f"{name}_best_s": best[name]})
    return counters, info
