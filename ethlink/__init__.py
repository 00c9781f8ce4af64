"""ethlink: a packet-level emulator of GPU interconnect over Ethernet.

    import ethlink
    sc = ethlink.Scenario.from_toml("my.toml")        # or ethlink.scenarios.load("incast-raw")
    result = ethlink.Simulation(sc).run()
    print(result.summary["fct_ps"], result.flows_table())

The compiled engine is imported on first use of Simulation, so pure-Python parts
(scenario validation, ethlink.frames) work without it.
"""
__version__ = "0.1.0"

from .scenario import Scenario, ScenarioError  # noqa: E402


def __getattr__(name):
    if name in ("Simulation", "Result"):
        from . import sim
        return getattr(sim, name)
    raise AttributeError(f"module 'ethlink' has no attribute {name!r}")


__all__ = ["Scenario", "ScenarioError", "Simulation", "Result", "__version__"]
