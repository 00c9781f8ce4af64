"""ethlink: a packet-level emulator of GPU interconnect over Ethernet.

    import ethlink
    sc = ethlink.Scenario.from_toml("my.toml")        # or ethlink.scenarios.load("incast-raw")
    result = ethlink.Simulation(sc).run()
    print(result.summary["fct_ps"], result.flows_table())

The names below are imported on first use: Scenario (ethlink.scenario) and Simulation,
Result (ethlink.sim, with the compiled engine), so pure-Python parts (scenario
validation, ethlink.frames) work without the engine, and the `ethlink` command starts
with its garbage collector paused for every import (ethlink/__main__.py).
"""
__version__ = "0.1.0"

_LAZY = {"Scenario": "scenario", "ScenarioError": "scenario", "Simulation": "sim", "Result": "sim"}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ethlink' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Scenario", "ScenarioError", "Simulation", "Result", "__version__"]
