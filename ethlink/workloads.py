"""Workload generators: turn a scenario's [[workload]] tables into flows.

Each generator returns numpy columns (src, dst, size, start_ps, prio), so an all-to-all of
a 1024-host fat-tree (about a million flows) is built without a Python object per flow.

- incast: every sender sends `size` bytes to one receiver, all at `start` (optionally
  staggered by `stagger` per sender): the hard case of lossless fabrics.
- permutation: each host sends to exactly one other host and receives from exactly one
  (a random derangement, seeded): the classic test of ECMP path collisions.
- alltoall: every host sends `size` bytes to every other host (MoE dispatch, the
  all-to-all collective).
"""
from __future__ import annotations

import numpy as np

from .scenario import FlowSpec, Scenario, ScenarioError, n_hosts

from .scenario import VERBS

COLUMNS = ("src", "dst", "size", "start_ps", "prio", "verb")


def _cols(src, dst, size, start, prio, verb=0):
    n = len(src)
    return {
        "verb": np.broadcast_to(np.asarray(verb, dtype=np.int32), (n,)).copy(),
        "src": np.asarray(src, dtype=np.int32),
        "dst": np.asarray(dst, dtype=np.int32),
        "size": np.broadcast_to(np.asarray(size, dtype=np.int64), (n,)).copy(),
        "start_ps": np.broadcast_to(np.asarray(start, dtype=np.int64), (n,)).copy(),
        "prio": np.broadcast_to(np.asarray(prio, dtype=np.int32), (n,)).copy(),
    }


def incast(senders, receiver: int, size: int, start_ps: int = 0, prio: int = 0, stagger_ps: int = 0):
    senders = np.asarray(senders, dtype=np.int32)
    start = start_ps + stagger_ps * np.arange(len(senders), dtype=np.int64)
    return _cols(senders, np.full(len(senders), receiver), size, start, prio)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation with no fixed point (rejection sampling; expected
    e tries)."""
    if n < 2:
        raise ScenarioError("a permutation needs at least 2 hosts")
    while True:
        p = rng.permutation(n)
        if not np.any(p == np.arange(n)):
            return p


def permutation(hosts: int, size: int, seed: int, start_ps: int = 0, prio: int = 0):
    dst = derangement(hosts, np.random.default_rng(seed))
    return _cols(np.arange(hosts), dst, size, start_ps, prio)


def alltoall(hosts: int, size: int, start_ps: int = 0, prio: int = 0):
    src = np.repeat(np.arange(hosts, dtype=np.int32), hosts - 1)
    off = np.tile(np.arange(1, hosts, dtype=np.int32), hosts)
    dst = (src + off) % hosts      # each source visits destinations in a rotated order
    return _cols(src, dst, size, start_ps, prio)


def expand(sc: Scenario) -> dict[str, np.ndarray]:
    """All flows of a scenario: explicit [[flow]] tables first, then each workload."""
    parts = []
    if sc.flows:
        parts.append(_cols([f.src for f in sc.flows], [f.dst for f in sc.flows],
                           [f.size for f in sc.flows], [f.start_ps for f in sc.flows],
                           [f.prio for f in sc.flows], [VERBS.index(f.verb) for f in sc.flows]))
    count = n_hosts(sc.topology)
    for w in sc.workloads:
        if w["kind"] == "incast":
            part = incast(w["senders"], w["receiver"], w["size"], w["start_ps"], w["prio"], w["stagger_ps"])
        elif w["kind"] == "permutation":
            part = permutation(count, w["size"], w["seed"] or sc.seed, w["start_ps"], w["prio"])
        else:
            part = alltoall(count, w["size"], w["start_ps"], w["prio"])
        part["verb"][:] = VERBS.index(w["verb"])
        parts.append(part)
    if not parts:
        return _cols([], [], [], [], [])
    return {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}


__all__ = ["incast", "permutation", "alltoall", "derangement", "expand", "FlowSpec"]
