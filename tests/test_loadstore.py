"""Load/Store semantics (csrc/loadstore.pxd, ethlink/loadstore.py): latency from the wire
model, tags, ordering, fences, coalescing, conservation, and bad input.

Expected latencies are derived from the wire model (see tests/test_scenarios_ethlink.py
for the rules) and the ethlink v1 frame format (`ethlink.frames.ethlink_frame_bytes`).
Relations (tags, ordering, fences, coalescing limits) are checked on every operation of
small fixed-seed runs, from `Result.ls_ops` and the run's trace.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow as pa
import pytest

import ethlink
from conftest import NS
from ethlink import loadstore, scenarios
from ethlink import trace as T
from ethlink import tracepcap as TP
from ethlink.frames import fields as F
from ethlink.scenario import ScenarioError
from ethlink.sim import Simulation
from test_scenarios_ethlink import el_frames, one_way, op_latency, star_hops

LOAD, STORE, STORE_ACK, FADD, CAS, FENCE = range(6)
EO = F.ElOpcode
EL_BASE = F.ETHER_BYTES + F.DOT1Q_BYTES + F.EL_BASE.size + F.FCS_BYTES        # 30 B
EL_TXN = F.EL_TXN.size                                                          # 16 B


def scenario(**over) -> dict:
    """An 8-GPU 400G star, cut-through switch, closed-loop Load/Store of every kind."""
    d = {
        "name": "ls-test", "seed": 7,
        "topology": {"kind": "star", "hosts": 8, "rate": "400G", "delay": "10ns"},
        "switch": {"latency": "150ns", "cut_through": True},
        "host": {"latency": "50ns"},
        "ls": {"tags": 8},
        "loadstore": [{"gpus": "all", "ops": 150, "mode": "closed",
                       "mix": {"load": 0.3, "store": 0.3, "store_ack": 0.2, "fadd": 0.1, "cas": 0.1},
                       "sizes": [32, 64, 200, 256]}],
    }
    for key, val in over.items():
        sec, _, field = key.partition("__")
        if field:
            d.setdefault(sec, {})[field] = val
        else:
            d[sec] = val
    return d


def simulate(data: dict, trace: str | None = None):
    sim = Simulation(ethlink.Scenario.from_dict(data), trace=trace)
    recs = []
    res = sim.run(trace_sink=recs.append if trace else None)
    table = None
    if trace:
        batch = T.records_to_batch(np.concatenate(recs))
        table = pa.Table.from_batches([batch]).replace_schema_metadata(T.simulation_metadata(sim) | {"complete": "true"})
    return sim, res, table


def col(table: pa.Table, name: str) -> np.ndarray:
    if name in ("event", "kind", "reason"):
        return T.codes(table, name)
    return table[name].to_numpy()


def ev(name: str) -> int:
    return T.EVENT_NAMES.index(name)


def kind_code(name: str) -> int:
    return T.FRAME_KINDS.index(name)


def host_rows(table, sim, event: str) -> np.ndarray:
    """Rows of Load/Store frames for `event` at host nodes."""
    hosts = np.asarray(sim.compiled.host_node)
    return np.nonzero((col(table, "event") == ev(event)) & np.isin(col(table, "node"), hosts)
                      & (col(table, "pkt") >= 0) & ((col(table, "flags") & TP.PF_LS) != 0))[0]


# --- latency ----------------------------------------------------------------------------------

def test_multi_hop_latency_follows_the_cut_through_rule():
    """On the 2:1 leaf-spine of ls-under-rdma (400G hosts, 800G uplinks), idle: a leaf
    cannot cut through onto a faster uplink (store-and-forward), the spine and the far
    leaf can; a same-leaf op crosses one switch."""
    sc = scenarios.load("ls-under-rdma")
    src = copy.deepcopy(sc.source)
    del src["workload"]
    del src["loadstore"]
    per = sc.topology.hosts_per_leaf
    far = sc.topology.leaves * per - 1
    ops = [("load", 256, far), ("load", 64, far), ("store", 256, far), ("store_ack", 128, far),
           ("cas", 8, far), ("load", 256, 1), ("store", 64, 1)]
    src["ls_op"] = [{"src": "h0", "dst": f"h{d}", "kind": k, "time": f"{5 * i}us"} | ({} if k == "cas" else {"size": s})
                    for i, (k, s, d) in enumerate(ops)]
    sim, res, _ = simulate(src)
    t, sw, h = sc.topology, sc.switch, sc.host
    up, down = t.uplink_rate_bps, t.rate_bps
    far_path = [(down, t.delay_ps, sw.latency_ps, True, up),          # leaf -> faster uplink: S&F
                (up, t.fabric_delay_ps, sw.latency_ps, True, up),     # spine -> leaf at 800G
                (up, t.fabric_delay_ps, sw.latency_ps, True, down),   # leaf -> host at 400G
                (down, t.delay_ps, h.latency_ps, False, None)]
    near_path = star_hops(sc)
    assert res.summary["ls"]["count"] == len(ops)
    for (k, s, d), op in zip(ops, res.ls_ops):
        path = far_path if d == far else near_path
        want = op_latency(k, s, el_frames, path, path, sc.ls.target_latency_ps)
        assert op["complete_ps"] - op["start_ps"] == want, (k, s, d)
    # the store-and-forward fallback costs the serialization of the rest of the frame
    big = el_frames("store", 256)[0]
    as_ct = [(down, t.delay_ps, sw.latency_ps, True, down)] + far_path[1:]
    assert one_way(big, far_path) > one_way(big, as_ct)


def test_coalescing_wait_delays_a_lone_transaction_by_the_wait_limit():
    """Alone on the fabric, a transaction waits `coalesce_wait` for company at each end
    that builds a frame: requests at the issuer, responses at the target."""
    wait = 40 * NS
    base_sim, base, _ = simulate(scenarios.load("ls-idle").source)
    data = copy.deepcopy(base_sim.scenario.source)
    data["ls"].update(coalesce=1024, coalesce_wait="40ns")
    _, co, _ = simulate(data)
    for a, b in zip(base.ls_ops, co.ls_ops):
        frames_built = 1 if a["kind"] == STORE else 2
        assert b["complete_ps"] - b["start_ps"] == a["complete_ps"] - a["start_ps"] + frames_built * wait


def test_coalesced_frames_respect_the_size_and_wait_limits():
    """64 B posted stores, coalesce 512 B: at most floor((512 - 30) / (16 + 64)) = 6 per
    frame, and that many when the GPU keeps enough outstanding. Every transaction's
    frame is enqueued at its NIC within coalesce_wait of the transaction's start."""
    limit, wait = 512, 30 * NS
    data = scenario(ls__coalesce=limit, ls__coalesce_wait="30ns", ls__tags=32,
                    loadstore=[{"gpus": "all", "ops": 200, "mode": "closed", "destinations": "neighbour",
                                "mix": {"store": 1.0}, "sizes": [64]}])
    sim, res, table = simulate(data, trace="endpoints")
    most = (limit - EL_BASE) // (EL_TXN + 64)
    ops = res.ls_ops
    rows = host_rows(table, sim, "enqueue")
    src_node = np.asarray(sim.compiled.host_node)[col(table, "src")[rows]]
    rows = rows[col(table, "node")[rows] == src_node]                   # at the issuing NIC
    ntx, size = col(table, "ntx")[rows], col(table, "size")[rows]
    assert ntx.max() == most and (ntx >= 1).all()
    assert (size == EL_BASE + ntx * (EL_TXN + 64)).all() and (size <= limit).all()
    ls = TP.LsFrames(ops, table)
    seen = np.zeros(len(ops), dtype=int)
    t = col(table, "time_ps")
    for i, r in zip(rows.tolist(), TP.rows(table.take(pa.array(rows)))):
        m = ls.members(r)
        assert len(m) == r["ntx"] and (ops["dst"][m] == r["dst"]).all()
        seen[m] += 1
        waited = t[i] - ops["start_ps"][m]
        assert (waited >= 0).all() and (waited <= wait).all()
    assert (seen[ops["kind"] != FENCE] == 1).all()                      # each store in one frame


def test_coalescing_mixed_kinds_requests_and_responses():
    """Every kind and size, coalesced: frames never exceed the limit, each transaction
    rides in exactly one request frame (and, when answered, one response frame), and
    no transaction waits for company longer than coalesce_wait at either end."""
    limit, wait = 600, 25 * NS
    data = scenario(ls__coalesce=limit, ls__coalesce_wait="25ns", ls__tags=24)
    sim, res, table = simulate(data, trace="endpoints")
    ops = res.ls_ops
    target_ps = sim.scenario.ls.target_latency_ps
    ls = TP.LsFrames(ops, table)
    t, flags = col(table, "time_ps"), col(table, "flags")
    enq, dlv = host_rows(table, sim, "enqueue"), host_rows(table, sim, "deliver")
    # when each request reached its target: the response is built target_ps later
    arrived = np.full(len(ops), -1, dtype=np.int64)
    for i, r in zip(dlv.tolist(), TP.rows(table.take(pa.array(dlv)))):
        if not r["flags"] & TP.PF_RESPONSE:
            for m in ls.members(r):
                arrived[m] = t[i] if arrived[m] < 0 else arrived[m]
    in_req = np.zeros(len(ops), dtype=int)
    in_resp = np.zeros(len(ops), dtype=int)
    for i, r in zip(enq.tolist(), TP.rows(table.take(pa.array(enq)))):
        m = ls.members(r)
        txns = [(EO(x["opcode"]), x["length"]) for x in ls.txns(r)]
        assert r["size"] == F.ethlink_frame_bytes(txns) <= limit
        if r["flags"] & TP.PF_RESPONSE:
            in_resp[m] += 1
            made = arrived[m] + target_ps
        else:
            in_req[m] += 1
            made = ops["start_ps"][m]
        assert ((t[i] - made >= 0) & (t[i] - made <= wait)).all()
    real = ops["kind"] != FENCE
    answered = real & (ops["kind"] != STORE)
    assert (in_req[real] == 1).all() and (in_resp[answered] == 1).all() and (in_resp[~answered] == 0).all()
    assert res.summary["ls"]["frames"] < 2 * real.sum() - (ops["kind"] == STORE).sum()   # some shared a frame


# --- conservation ---------------------------------------------------------------------------------

def test_every_operation_completes_exactly_once():
    sim, res, table = simulate(scenario(), trace="endpoints")
    ops = res.ls_ops
    real = ops["kind"] != FENCE
    assert (ops["issue_ps"] <= ops["start_ps"]).all() and (ops["start_ps"] <= ops["complete_ps"]).all()
    s = res.summary["ls"]
    assert s["count"] == s["total"] == s["issued"] == real.sum() and s["retries"] == 0
    assert res.summary["packets_in_flight"] == 0
    # frames: one request per op, one response per answered op, each delivered once
    dlv = host_rows(table, sim, "deliver")
    flow, flags, t = col(table, "flow")[dlv], col(table, "flags")[dlv], col(table, "time_ps")[dlv]
    assert (col(table, "ntx")[dlv] == 1).all()
    resp = (flags & TP.PF_RESPONSE) != 0
    answered = real & (ops["kind"] != STORE)
    assert (np.bincount(flow[~resp], minlength=len(ops))[real] == 1).all()
    assert (np.bincount(flow[resp], minlength=len(ops)) == answered).all()
    # completion is the response's arrival (the data's, for a posted store)
    done_at = np.full(len(ops), -1, dtype=np.int64)
    done_at[flow[resp]] = t[resp]
    posted = ~resp & (ops["kind"][flow] == STORE)
    done_at[flow[posted]] = t[posted]
    assert (done_at[real] == ops["complete_ps"][real]).all()
    # the engine's own operation rows: one issue and one completion per op
    for name, field in (("op_issue", "start_ps"), ("op_complete", "complete_ps")):
        rows = np.nonzero((col(table, "event") == ev(name)) & (col(table, "kind") == kind_code("ethlink")))[0]
        assert len(rows) > 0
        f = col(table, "flow")[rows]
        assert (np.bincount(f, minlength=len(ops)) == 1).all()
        assert (col(table, "time_ps")[rows] == ops[field][f]).all()


# --- tags ------------------------------------------------------------------------------------------

def _held_intervals(res, sim, table):
    """(gpu, start, end) of each operation's tag: to completion, or for a posted store to
    its frame leaving the NIC (the tx_start row of its request at the issuing host)."""
    ops = res.ls_ops
    end = ops["complete_ps"].copy()
    tx = host_rows(table, sim, "tx_start")
    flow, flags, node, t = (col(table, c)[tx] for c in ("flow", "flags", "node", "time_ps"))
    src_node = np.asarray(sim.compiled.host_node)[ops["src"][flow]]
    req = ((flags & TP.PF_RESPONSE) == 0) & (node == src_node)
    first = {}
    for f, tt in zip(flow[req].tolist(), t[req].tolist()):
        first.setdefault(f, tt)
    posted = np.nonzero(ops["kind"] == STORE)[0]
    assert all(int(p) in first for p in posted)
    end[posted] = [first[int(p)] for p in posted]
    real = ops["kind"] != FENCE
    return ops["src"][real], ops["start_ps"][real], end[real]


def _max_overlap(start, end) -> int:
    """Most intervals [start, end) open at once (an end at t frees before a start at t)."""
    pts = sorted([(int(e), 0) for e in end] + [(int(s), 1) for s in start])
    cur = best = 0
    for _, is_start in pts:
        cur += 1 if is_start else -1
        best = max(best, cur)
    return best


@pytest.mark.parametrize("tags", [1, 4])
def test_tags_bound_the_outstanding_operations(tags):
    data = scenario(ls__tags=tags)
    sim, res, table = simulate(data, trace="endpoints")
    gpu, start, end = _held_intervals(res, sim, table)
    assert (end >= start).all()
    gpus = res.summary["ls"]
    for g in range(sim.scenario.topology.hosts):
        m = gpu == g
        assert _max_overlap(start[m], end[m]) == tags          # reached, never exceeded
    # the engine's tag-occupancy integral is the same sum of held intervals
    eng = sim.engine.ls_gpus
    for g in range(sim.scenario.topology.hosts):
        m = gpu == g
        assert eng["tag_ps"][g] == int((end[m] - start[m]).sum())
        assert eng["outstanding"][g] == 0
    assert 0 < gpus["tag_occupancy"] <= 1
    if tags == 1:
        # one tag: every operation starts when the previous one let its tag go
        for g in range(sim.scenario.topology.hosts):
            m = gpu == g
            assert (start[m][1:] == end[m][:-1]).all()


# --- ordering and fences --------------------------------------------------------------------------

def _ordering_scenario(order: str) -> dict:
    """8 GPUs on 4 planes, an all-to-all of RDMA WRITEs pinned per QP to a plane loads
    the planes unevenly; Load/Store shares the RDMA class."""
    return {
        "name": "ordering", "seed": 3,
        "topology": {"kind": "multiplane-star", "hosts": 8, "planes": 4, "rate": "400G", "delay": "10ns"},
        "switch": {"latency": "150ns", "cut_through": True, "buffer": "16MiB"},
        "host": {"latency": "50ns", "mtu": 4096},
        "pfc": {"priorities": [3, 5]},
        "ls": {"tags": 16, "ordering": order, "prio": 3},
        "workload": [{"kind": "alltoall", "size": "64KiB", "prio": 3, "transport": "roce", "verb": "write"}],
        "loadstore": [{"gpus": "all", "ops": 300, "mode": "open", "rate": 5e7,
                       "mix": {"load": 0.4, "store": 0.3, "store_ack": 0.3}, "sizes": [64, 256]}],
    }


def _inversions(ops) -> int:
    """Pairs of consecutive operations from one GPU to one destination (posted stores and
    acknowledged operations counted apart: they complete at different ends) that
    complete out of issue order."""
    n = 0
    for s in np.unique(ops["src"]):
        for d in np.unique(ops["dst"]):
            for posted in (True, False):
                m = (ops["src"] == s) & (ops["dst"] == d) & ((ops["kind"] == STORE) == posted) & (ops["kind"] != FENCE)
                n += int((np.diff(ops["complete_ps"][m]) < 0).sum())
    return n


def test_strict_ordering_completes_in_issue_order_per_destination():
    _, strict, _ = simulate(_ordering_scenario("strict"))
    _, relaxed, _ = simulate(_ordering_scenario("relaxed"))
    for r in (strict, relaxed):
        assert r.summary["ls"]["count"] == r.summary["ls"]["total"] and r.summary["ls"]["retries"] == 0
    assert _inversions(strict.ls_ops) == 0
    assert _inversions(relaxed.ls_ops) > 0         # sprayed over planes, they do overtake


def _fence_violations(ops, include_posted: bool) -> int:
    n = 0
    for g in np.unique(ops["src"]):
        mine = ops[ops["src"] == g]
        counted = mine["kind"] != FENCE
        if not include_posted:
            counted &= mine["kind"] != STORE
        last_done = np.maximum.accumulate(np.where(counted, mine["complete_ps"], -1))
        for f in np.nonzero(mine["kind"] == FENCE)[0]:
            assert mine["start_ps"][f] == mine["complete_ps"][f]
            n += int(f > 0 and last_done[f - 1] > mine["start_ps"][f])
            n += int((mine["start_ps"][f + 1:] < mine["start_ps"][f]).sum())
    return n


def test_fences_order_relaxed_operations():
    data = _ordering_scenario("relaxed")
    data["loadstore"][0]["fence_every"] = 10
    _, res, _ = simulate(data)
    ops = res.ls_ops
    assert (ops["kind"] == FENCE).sum() == 8 * 30
    assert _fence_violations(ops, include_posted=False) == 0


def test_a_fence_waits_for_posted_stores_to_complete():
    """loadstore.pxd: 'A fence waits until every earlier operation of its GPU completed';
    a posted store completes when its data reaches the target."""
    data = scenarios.load("ls-idle").source
    data = copy.deepcopy(data)
    data["ls"]["ordering"] = "relaxed"
    data["ls_op"] = [{"src": "h0", "dst": "h1", "kind": "store", "size": 64, "time": 0},
                     {"src": "h0", "dst": "h0", "kind": "fence", "time": 0},
                     {"src": "h0", "dst": "h2", "kind": "store", "size": 64, "time": 0}]
    _, res, _ = simulate(data)
    ops = res.ls_ops
    assert ops["start_ps"][1] >= ops["complete_ps"][0]


# --- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"ls_op": [{"src": "h0", "dst": "h8", "kind": "load", "size": 64}]}, "ls_op[0].dst"),
    ({"ls_op": [{"src": "h9", "dst": "h1", "kind": "store", "size": 64}]}, "ls_op[0].src"),
    ({"loadstore": [{"gpus": ["h0", "h12"], "ops": 10}]}, "loadstore[0].gpus[1]"),
    ({"loadstore": [{"gpus": "all", "destinations": "hotspot", "hot": "h8"}]}, "loadstore[0].hot"),
    ({"ls_op": [{"src": "h0", "dst": "h1", "kind": "load", "size": 0}]}, "ls_op[0].size"),
    ({"ls_op": [{"src": "h0", "dst": "h1", "kind": "store", "size": 257}]}, "ls_op[0].size"),
    ({"loadstore": [{"gpus": "all", "sizes": [64, 512]}]}, "loadstore[0].sizes[1]"),
    ({"ls": {"tags": 0}}, "ls.tags"),
    ({"ls": {"max_size": 0}}, "ls.max_size"),
])
def test_bad_load_store_input_is_refused_before_the_run(change, field):
    data = scenario()
    data.update(change)
    with pytest.raises(ScenarioError) as exc:
        ethlink.Scenario.from_dict(data)
    assert str(exc.value).startswith(field), str(exc.value)


def test_max_size_bounds_operation_sizes():
    data = scenario(ls__max_size=512, loadstore=[{"gpus": "all", "ops": 20, "sizes": [512]}])
    _, res, _ = simulate(data)
    real = res.ls_ops["kind"] != FENCE
    assert (res.ls_ops["complete_ps"][real] >= 0).all()
    with pytest.raises(ScenarioError, match=r"ls_op\[0\]\.size: .*1\.\.512"):
        ethlink.Scenario.from_dict(scenario(ls__max_size=512, ls_op=[{"src": 0, "dst": 1, "kind": "load",
                                                                        "size": 513}]))


# --- the op table is a function of the scenario ---------------------------------------------------

def test_a_traces_scenario_source_regenerates_the_same_operations():
    sc = scenarios.load("ethlink-mixed")
    again = ethlink.Scenario.from_dict(json.loads(json.dumps(sc.source, sort_keys=True)))
    assert again == sc
    a, _ = loadstore.build_ops(sc, sc.topology.hosts)
    b, _ = loadstore.build_ops(again, sc.topology.hosts)
    assert (a["kind"] == b["kind"]).all() and (a["size"] == b["size"]).all()
