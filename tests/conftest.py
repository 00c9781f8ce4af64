"""Shared helpers for the engine, scenario, topology and CLI tests.

The timing helpers here are written from the wire model, independently of ethlink.sim
(whose ideal-FCT function is itself under test): a frame of `size` bytes (FCS included)
occupies the wire for ser(size + 20) -- 8 B preamble/SFD before it, 12 B inter-frame gap
after it -- and its last bit reaches the peer ser(8 + size) + delay after its first bit
left. Serialization is exact: ceil(bits * 1e12 / rate) ps.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

# The property tests (hypothesis) draw the same examples on every run, so that `make test`
# passes or fails the same way on every machine and in CI. HYPOTHESIS_PROFILE=explore
# draws new ones each run (a failure is saved in .hypothesis/ and replayed first).
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

import ethlink
from ethlink.sim import Simulation

G = 10**9            # bit/s per Gb/s
NS = 1000            # ps per ns
PREAMBLE = 8         # preamble + SFD, bytes
WIRE_EXTRA = 20      # preamble + SFD + inter-frame gap, bytes
RAW_OVERHEAD = 22    # Ethernet 14 + 802.1Q 4 + FCS 4, bytes
MIN_FRAME = 64
CT_HEADER = 64       # bytes a cut-through switch reads before forwarding


def ser(nbytes: int, rate_bps: int) -> int:
    """ceil(nbytes * 8 * 1e12 / rate), in integer arithmetic."""
    return -(-nbytes * 8 * 10**12 // rate_bps)


def frame(payload: int) -> int:
    """Raw Ethernet frame bytes for a payload: 22 B of headers and FCS, at least 64."""
    return max(payload + RAW_OVERHEAD, MIN_FRAME)


def simulate(data: dict, until: int | None = None):
    """Validate `data` as a scenario, run it, return (simulation, result)."""
    sim = Simulation(ethlink.Scenario.from_dict(data))
    return sim, sim.run(until)


def run_traced(sc, path, level: str = "hop"):
    """Run scenario `sc` with its trace at `level` written to `path`: (the trace table, its
    TraceInfo, the Result)."""
    from ethlink import trace as T
    sim = Simulation(sc, trace=level)
    with T.TraceWriter.for_simulation(sim, path) as w:
        res = sim.run(trace_sink=w.write)
    table = T.read_trace(path)
    return table, T.TraceInfo.of(table), res


def port_index(sim, a: str, b: str) -> int:
    """The port of node `a` whose link goes to node `b` (first one if several)."""
    pt, names = sim.compiled.port_table, sim.compiled.fabric.names
    ia, ib = names.index(a), names.index(b)
    hits = np.nonzero((pt.node == ia) & (pt.node[pt.peer] == ib))[0]
    assert len(hits), f"no link {a} -> {b}"
    return int(hits[0])


def tier_ports(sim, from_tier: str, to_tier: str) -> np.ndarray:
    """Ports on a node of `from_tier` whose peer is on a node of `to_tier`."""
    pt, tiers = sim.compiled.port_table, np.asarray(sim.compiled.fabric.tiers)
    return np.nonzero((tiers[pt.node] == from_tier) & (tiers[pt.node[pt.peer]] == to_tier))[0]


def chi2_sf_even(x: float, df: int) -> float:
    """Survival function of the chi-square distribution for an even number of degrees of
    freedom: exp(-x/2) * sum_{i < df/2} (x/2)^i / i! (closed form, no scipy needed)."""
    assert df % 2 == 0 and df > 0
    term, total = 1.0, 1.0
    half = x / 2.0
    for i in range(1, df // 2):
        term *= half / i
        total += term
    return float(np.exp(-half) * total)


@pytest.fixture
def tmp_out(tmp_path):
    return tmp_path / "out"
