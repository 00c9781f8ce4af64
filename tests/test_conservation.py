"""Conservation of flow data (issue 9): at the end of every run, raw and RoCE alike,

    first transmissions + retransmitted copies
        = delivered + discarded by the receiver + dropped in the fabric + in flight

in payload bytes (summary.json `conservation`), on every built-in scenario, run to its
end and cut off by `until` while frames are queued and on wires, and on the loss-recovery
paths (tail drops with go-back-N and timeouts, bit errors without LLR, RDMA READs).
`in_flight_bytes` is a walk of the engine's packet pool, independent of the counters.
Each run also checks the engine's index of non-empty queues against the queues.
"""
from __future__ import annotations

import numpy as np
import pytest

import ethlink
from ethlink import scenarios
from ethlink.sim import Simulation

# Shrunk where a built-in takes more than a second.
SMALL = {"alltoall-fattree": ["topology.k=4"], "fairness-dcqcn": ["run.until=300us"],
         "ethlink-mixed": ["topology.hosts=16", "workload.0.size=64KiB", "loadstore.0.ops=200"],
         "permutation-leafspine": ["topology.leaves=4", "topology.hosts_per_leaf=8"]}
PARTS = ("first_tx_bytes", "retransmitted_bytes", "delivered_bytes", "discarded_bytes", "dropped_bytes",
         "in_flight_bytes")


def queue_index_invariants(sim):
    """The engine's per-port index of non-empty queues (Port.qmask, which the scheduler
    reads instead of the eight queues) matches the queues, and a queue's head, frame count
    and bytes agree, wherever the run stopped."""
    q = sim.engine.queues.reshape(-1, 8)
    nonempty = q["head"] >= 0
    assert ((q["pkts"] > 0) == nonempty).all() and ((q["bytes"] > 0) == nonempty).all()
    assert ((q["tail"] >= 0) == nonempty).all()
    mask = (nonempty * (1 << np.arange(8))).sum(axis=1)
    assert (sim.engine.ports["qmask"] == mask).all()


def conservation(name, overrides=(), until=None):
    sc = scenarios.load(name, SMALL.get(name, []) + list(overrides))
    sim = Simulation(sc)
    s = sim.run(until=until or sc.run.until_ps or None).summary
    queue_index_invariants(sim)
    c = s["conservation"]
    assert all(c[k] >= 0 for k in PARTS), c
    assert c["residual"] == 0, c
    assert c["first_tx_bytes"] == s["bytes_sent"] and c["delivered_bytes"] == s["bytes_delivered"]
    return s, c


@pytest.mark.parametrize("name", scenarios.names())
@pytest.mark.parametrize("until", [None, 20_000_000, 150_000_000])
def test_every_builtin_conserves_flow_bytes(name, until):
    s, c = conservation(name, until=until)
    if s["stop"] == "empty":
        assert c["in_flight_bytes"] == 0


def test_a_cut_off_run_has_bytes_in_flight_and_they_balance():
    s, c = conservation("incast-pfc", until=100_000_000)
    assert s["stop"] == "until" and c["in_flight_bytes"] > 0 and c["delivered_bytes"] > 0


def test_go_back_n_after_tail_drops_balances():
    """incast-lossy: drops, NAK'd out-of-order frames discarded, copies re-sent."""
    s, c = conservation("incast-lossy")
    assert c["dropped_bytes"] > 0 and c["discarded_bytes"] > 0 and c["retransmitted_bytes"] > 0
    assert c["delivered_bytes"] == c["first_tx_bytes"]          # every byte arrived once in the end


def test_bit_errors_without_llr_and_reads_balance():
    s, c = conservation("llr-ber", ["link.llr=false"])
    assert s["fcs_drops"] > 0 and c["dropped_bytes"] > 0
    # h0 READs 1 MiB from each of 16 hosts: the responses converge on h0's port and drop;
    # re-issued READs send responses again
    sc = ethlink.Scenario.from_dict({
        "topology": {"kind": "star", "hosts": 17}, "switch": {"buffer": "1MiB"}, "roce": {"rto": "100us"},
        "flow": [{"src": "h0", "dst": f"h{i}", "size": "1MiB", "transport": "roce", "verb": "read"}
                 for i in range(1, 17)]})
    s = Simulation(sc).run().summary
    c = s["conservation"]
    assert c["residual"] == 0 and c["retransmitted_bytes"] > 0 and c["dropped_bytes"] > 0, c
    assert s["flows_completed"] == 16 and c["in_flight_bytes"] == 0
