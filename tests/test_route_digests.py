"""Every built-in scenario (scaled down where listed) gives the same results as before
routing moved from a dense (node x host) table to per-switch tables by
destination class: digests of the summary's aggregates, of the per-flow times (with the
ideal FCT, which walks the routes in Python) and of the hop-level trace records.

The expected digests in tests/data/route_digests.json were computed by this file's
`digests()` run on main at 7458544 (the last commit before the routing change reached
it; first computed on 2d47d50), not written by hand:

    git worktree add --detach /tmp/base 7458544 && cd /tmp/base
    $VENV/python setup.py build_ext --inplace && cp $CHECKOUT/tests/test_route_digests.py tests/
    PYTHONPATH=/tmp/base $VENV/python tests/test_route_digests.py > $CHECKOUT/tests/data/route_digests.json

Only the summary keys present then are compared, so keys added since do not change the
digest. The routing change gave exactly those digests. A change that legitimately changes
results regenerates the file (`$VENV/python tests/test_route_digests.py > tests/data/
route_digests.json`) after checking what moved, and says so in its commit: the IBA RoCE
timer (roce.timeout 20, about 4.3 s) did, its summaries equal but for the event counts
(stale timers fire later) and the deadlock checks, which now run only while packets exist.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ethlink import scenarios
from ethlink.sim import Simulation

FIXTURE = Path(__file__).with_name("data") / "route_digests.json"
# Overrides that keep each run short; the rest run as shipped.
SCALE = {
    "alltoall-fattree": ["topology.k=4", "workload.0.size=16KiB"],
    "permutation-leafspine": ["topology.leaves=4", "topology.hosts_per_leaf=8", "workload.0.size=256KiB"],
    "incast-raw": ["workload.0.size=64KiB"],
    "fairness-dcqcn": ["run.until=200us"],
    "ethlink-mixed": ["topology.hosts=16", "workload.0.size=16KiB", "loadstore.0.ops=200"],
}
# Variants of built-ins (name@what -> built-in, overrides on top of SCALE) that stress the
# event queue (csrc/evq.h) and the elided transmit-done events: zero delays (a frame
# arrives before its sender's IFG ends), long links and slow ports (wheel horizon, timers
# past it), fast ports (narrow buckets), runs cut by run.until. Their digests were computed
# with the engine of c6cd869, before those changes (module doc), and matched after them.
VARIANTS = {
    "incast-pfc@zero-delay": ("incast-pfc", ["topology.delay=0", "switch.latency=0", "host.latency=0"]),
    "incast-dcqcn@2us": ("incast-dcqcn", ["topology.delay=2us"]),
    "permutation-leafspine@800G": ("permutation-leafspine", ["topology.rate=800G", "topology.delay=0"]),
    "llr-ber@25G": ("llr-ber", ["topology.rate=25G"]),
    "ls-under-rdma@until": ("ls-under-rdma", ["run.until=50us"]),
    "incast-trim@800G": ("incast-trim", ["topology.rate=800G", "switch.latency=0"]),
    "victim-pfc@25G": ("victim-pfc", ["topology.rate=25G", "run.until=100us"]),
    "incast-hpcc@1us": ("incast-hpcc", ["seed=9", "topology.delay=1us"]),
}
# Wall-clock keys, the per-row lists that moved to Parquet tables, and warnings (prose).
SKIP = ("wall_s", "events_per_s", "ethlink_version", "flows", "qps", "ports", "warnings")


def _sha(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def digest(name: str, keys=None) -> dict:
    """Digests of one built-in's run; `keys`: the summary keys to take (default: all but
    SKIP), so that keys added since the fixture was made do not change it."""
    base, extra = VARIANTS.get(name, (name, []))
    sc = scenarios.load(base, SCALE.get(base, []) + extra)
    sim = Simulation(sc, trace="hop")
    parts = []
    res = sim.run(trace_sink=parts.append)
    summary = {k: v for k, v in res.summary.items() if k not in SKIP and (keys is None or k in keys)}
    text = json.dumps(summary, sort_keys=True, default=float, allow_nan=True)
    recs = np.concatenate(parts) if parts else np.zeros(0)
    return {"summary": hashlib.sha256(text.encode()).hexdigest()[:16],
            "flows": _sha(res.flows["finish_ps"], res.flows["complete_ps"], res.ideal_fct_ps),
            "trace": _sha(recs), "trace_rows": int(len(recs)), "summary_keys": sorted(summary)}


def digests() -> dict:
    return {name: digest(name) for name in [*scenarios.names(), *VARIANTS]}


@pytest.mark.parametrize("name", [*scenarios.names(), *VARIANTS])
def test_builtin_results_are_unchanged(name):
    expected = json.loads(FIXTURE.read_text())
    assert name in expected, f"{name}: no digest in {FIXTURE.name}; compute it (module doc)"
    assert digest(name, expected[name]["summary_keys"]) == expected[name]


@pytest.mark.parametrize("name", ["alltoall-fattree", "permutation-leafspine", "ethlink-mixed"])
def test_route_table_width_changes_nothing(name, monkeypatch):
    # Fabrics with 32767 route sets or more keep an int32 table (the rest int16): forced
    # here, the built-ins (a fat-tree, a leaf-spine, multi-plane hosts) route the same.
    from ethlink import _engine
    monkeypatch.setattr(_engine, "ROUTE_SET16_MAX", 0)
    assert Simulation(scenarios.load(name, SCALE.get(name, []))).engine.route_set_dtype == np.int32
    expected = json.loads(FIXTURE.read_text())
    assert digest(name, expected[name]["summary_keys"]) == expected[name]


if __name__ == "__main__":
    import sys
    json.dump(digests(), sys.stdout, indent=1, sort_keys=True)
    print()
