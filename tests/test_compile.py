"""The compiled QP table against a reference built one record at a time from the rules
of sim.build_qps: a send-only endpoint per raw group, a requester/responder pair per RoCE
or UET group, messages sharing (src, dst, transport, qp >= 0) on one QP, QPs numbered in
posting order with the responders after every requester. build_qps fills the table block
by block from a template record (a speed measure); this pins that every byte, padding
included, is what the plain construction gives.
"""
from __future__ import annotations

import numpy as np
import pytest

from ethlink import _engine, scenarios, sim as S
from ethlink.scenario import rto_initial_ps

OPS = ["raw", "write", "send", "read", "write_imm", "send_imm", "uet_write"]


def _table(n, seed):
    """n operations among the 5 hosts of fairness-nscc: every op kind, qp keys -1..2, so
    that messages share QPs across kinds and some share none."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 5, n)
    return {"id": np.arange(n), "time_ps": rng.integers(0, 10**6, n), "src": src,
            "dst": (src + rng.integers(1, 5, n)) % 5, "op": [OPS[i] for i in rng.integers(0, len(OPS), n)],
            "bytes": rng.integers(1, 40_000, n), "prio": rng.integers(0, 8, n), "qp": rng.integers(-1, 3, n)}


def _reference(sc, table):
    """QP records and each message's QP, one message and one record at a time."""
    mtu, line = sc.host.mtu, sc.topology.rate_bps
    groups, key_of, qp_of = [], {}, []
    for i in range(len(table["id"])):
        op = table["op"][i]
        tr = 0 if op == "raw" else 2 if op == "uet_write" else 1
        key = (int(table["src"][i]), int(table["dst"][i]), tr, int(table["qp"][i]))
        if key[3] >= 0 and key in key_of:
            q = key_of[key]
        else:
            q = len(groups)
            groups.append({"src": key[0], "dst": key[1], "tr": tr, "prio": int(table["prio"][i]),
                           "paired": op != "raw", "pkts": 0})
            if key[3] >= 0:
                key_of[key] = q
        qp_of.append(q)
        groups[q]["pkts"] += -(-int(table["bytes"][i]) // mtu)
    records = [dict(g, end="req", peer=-1) for g in groups]
    for q, g in enumerate(groups):
        if g["paired"]:
            records[q]["peer"] = len(records)
            records.append(dict(g, end="rsp", peer=q))
    out = np.zeros(len(records), dtype=_engine.QP_DTYPE)
    base, any_uet = 0, any(r["tr"] == 2 for r in records)
    nscc = sc.uet.nscc.enabled
    rtt = S.nscc_params(sc)["nscc_rtt_ps"]
    for q, r in enumerate(records):
        rec = out[q]
        for f in ("port", "next", "msg_head", "msg_tail", "msg_cur", "rsp_flow"):
            rec[f] = -1
        rec["host"] = r["src"] if r["end"] == "req" else r["dst"]
        rec["peer"], rec["transport"], rec["prio"], rec["mtu"] = r["peer"], r["tr"], r["prio"], mtu
        rec["line_bps"] = rec["rate_bps"] = rec["target_bps"] = line
        rec["alpha"], rec["last_cnp_ps"] = 1.0, -(2**62)
        rec["rto_ps"] = rto_initial_ps(sc.roce)
        if r["tr"] == 2:
            rec["rto_ps"] = sc.uet.rto_ps
            rec["uet_cwnd"] = sc.uet.window_bytes or 2**62
            if nscc:
                wnd = max(int(sc.uet.nscc.max_window * rtt * line / 8e12), mtu)
                rec["nscc_base_rtt"], rec["nscc_maxwnd"], rec["uet_cwnd"], rec["nscc_cwnd_min"] = rtt, wnd, wnd, wnd
            rec["uet_cap"] = r["pkts"]
        if any_uet:                     # per-PSN slots are numbered across every QP
            rec["uet_base"] = base
            base += rec["uet_cap"]
    return out, np.array(qp_of)


@pytest.mark.parametrize("nscc", [True, False])
@pytest.mark.parametrize("block", [3, 1024])
def test_qp_table_equals_reference(monkeypatch, nscc, block):
    """Raw, RoCE (every verb) and UET messages with shared and own QPs, NSCC on and off,
    the table filled in blocks of 3 records (many blocks, a partial last one) and of 1024
    (one block): the same bytes as the reference, and each message on its QP."""
    monkeypatch.setattr(S, "FILL_BLOCK_BYTES", block * _engine.QP_DTYPE.itemsize)
    sc = scenarios.load("fairness-nscc", [f"uet.nscc.enabled={str(nscc).lower()}"])
    table = _table(200, seed=7)
    want, want_qp = _reference(sc, table)
    c = S.compile_scenario(sc, workload=table)
    assert len(want) < len(table["id"]) + np.isin(table["op"], OPS[1:]).sum()    # some QPs are shared
    assert {0, 1, 2} <= set(c.qps["transport"].tolist())
    assert c.qps.tobytes() == want.tobytes()
    assert np.array_equal(c.flows["qp"], want_qp)


def test_qp_table_every_message_its_own():
    """No qp column (a scenario's workloads): one QP per message, RoCE ones paired."""
    sc = scenarios.load("incast-dcqcn", ["workload.0.senders=5", "workload.0.size=64KiB"])
    c = S.compile_scenario(sc)
    n = len(c.flows)
    assert len(c.qps) == 2 * n
    assert np.array_equal(c.flows["qp"], np.arange(n))
    assert np.array_equal(c.qps["peer"], np.r_[np.arange(n, 2 * n), np.arange(n)])
    assert np.array_equal(c.qps["host"], np.r_[c.flows["src"], c.flows["dst"]])


@pytest.mark.parametrize("wide", [False, True])
def test_groups_partition_rows_as_equal_rows(wide):
    """sim._groups (what the ideal FCTs are computed once per): rows in one group iff equal
    in every column, the member standing for a group one of its rows; with columns of
    small range (one int64 per row) and with one too wide for that (unique_rows)."""
    rng = np.random.default_rng(3)
    n = 5000
    cols = [rng.integers(0, 3, n), np.full(n, 7), rng.integers(-2, 2, n).astype(np.int32),
            rng.integers(0, 2**61, n) if wide else rng.integers(10, 14, n)]
    member, group = S._groups(cols)
    rows = np.stack([np.asarray(c, dtype=np.int64) for c in cols], axis=1)
    assert len(member) == len(np.unique(rows, axis=0))
    assert np.array_equal(rows, rows[member[group]])
    assert np.array_equal(group[member], np.arange(len(member)))
