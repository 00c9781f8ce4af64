"""Frames from trace rows: a trace row (+ the file's port table) -> an `ethlink.frames` row
-> wire bytes, scapy packets and pcaps of one capture point.

Addresses are per link, as in an IP-routed fabric where every hop rewrites the Ethernet
header: a frame on the link from port p to its peer q has source MAC `mac_of_port(p)` and
destination MAC `mac_of_port(q)`. A row's port is the transmitting port for enqueue,
tx_start, drop at a queue, mark, pause_tx, credit and llr_replay, and the receiving port
for rx, deliver and pause_rx (`RX_EVENTS`); a row without a port (drop before routing)
gets zero MACs. IPv4 addresses are `ip_of_host(src)` and `ip_of_host(dst)`.

Mapping (trace column -> frames column):

| trace    | raw / roce, roce_ack, cnp                 | pfc                    | ethlink / cbfc        |
| -------- | ----------------------------------------- | ---------------------- | --------------------- |
| kind     | frame_kind (roce_ack: a roce frame)       | frame_kind             | frame_kind            |
| size     | frame_bytes (and RoCE pad_cnt: the bytes beyond the headers and payload, 0..3) | frame_bytes | frame_bytes |
| port     | src_mac, dst_mac (see above)              | src_mac                | src_mac, dst_mac      |
| prio     | pcp                                       | (the class)            | pcp, ELBase tc / CBFC vc |
| src, dst | ip_src, ip_dst (roce, cnp)                | -                      | el_src, el_dst        |
| ecn      | ecn (IPv4 TOS)                            | -                      | ecn                   |
| psn      | psn (24 bits)                             | pfc_times of the class | el_tag (16 bits)      |
| qp       | dqpn = `frames.qpn_of_endpoint(qp)` (0x100 + qp) | -               | -                     |
| opcode   | opcode                                    | pfc_vector             | el_opcode             |
| payload  | payload_len                               | -                      | el_length             |
| addr     | reth_va (RETH opcodes); roce_ack: aeth_msn | -                     | el_addr; cbfc_credits |
| flow, ntx | -                                        | -                      | el_txns (op table)    |
| syndrome | aeth_syndrome (AETH opcodes)              | -                      | -                     |

HPCC INT (flags bit 64; csrc/hpcc.pxd). A frame's record count is in its size (4 B of
INT header plus 16 B per record beyond the RoCE frame). The records are the frame's
switch `tx_start` rows (an INT record is taken when the frame starts on a switch's
egress link): time, `qbytes` (the queue it left), the port's rate (the trace metadata)
and the port's cumulative `size` over its `tx_start` rows up to that one (the port's
transmitted bytes). An ACK echoes the records of the data frame delivered, at its
receiver, at the instant the ACK was made, with the ACK's PSN (`IntRecords`). Exact
for a complete hop-level trace; without the switch rows (an endpoints trace, a filtered
or cut table) the records a frame carries are present with zero values.

`MISSING_FIELDS` lists, per kind, the header fields the trace does not carry yet: they
take the frame builder's defaults, so those frames are well formed but those fields are
not the simulated ones.

Load/Store frames (flags bit 4; csrc/loadstore.pxd). A frame row names only its first
transaction (`flow` = its operation index, `psn` its tag, `addr` its address, `opcode`
its opcode) and how many it carries (`ntx`). Every transaction also has a `txn` row
(written when it joined the frame: `pkt` the frame, `ntx` its place, tag, address,
length, data bytes, opcode, and flag 32 for a store that wants a completion), so the
frame's transactions are its txn rows in place order: exact, retries and relaxed
reordering included. `ls_frames(info, table)` (and `frames(..., context=table)`, and the
`pcap` and `show` commands, which pass the whole trace) use them whenever the table has
txn rows. A table without them (a trace filtered by event or node, or written before
txn rows existed) falls back to the run's operation table (`Result.ls_ops`, or one
regenerated from the trace's `scenario_source`, corrected by its op_issue rows),
wrapped in `LsFrames`:

- a request frame carries its GPU's next `ntx` operations in issue order from `flow`
  (fences carry no transaction);
- a response frame carries the next `ntx` answers its target made, in the order the
  requests reached it (the table's `deliver` rows of request frames; without them the
  issuer's order, which strict ordering guarantees);
- a retried transaction may join another frame out of issue order (timeouts with
  coalescing on): such a frame fails the check below instead of being guessed.

Every rebuilt frame is checked against its row: transactions, data bytes and first tag
and address must match, else ValueError. An ethlink row with one transaction and nothing
else to go on maps its columns directly (a LOAD_REQ then addresses
`LOAD_LENGTH_UNKNOWN` bytes). RoCEv2 Load/Store frames (`ls.header = "roce"`:
READ_REQUEST / READ_RESPONSE_ONLY, WRITE_ONLY / ACK, FETCH_ADD, CMP_SWAP / ATOMIC_ACK)
carry the atomic operands in AtomicETH, not as payload; the RETH DMA length is the
operation's size (its txn row's length); DestQP is `LS_QPN_BASE` + the sending GPU (no
QP in the trace). cbfc rows: `addr` is the cumulative count of freed cells (the ELCredit
`credits` field); the receiving end's `credit` row (node = the frame's `dst`) is
addressed like a received frame. `op_issue`, `op_complete` and `txn` rows are not
frames (ValueError). Atomic operands and results are not simulated (zeros).

A capture point is one port and one event (by default the port's tx_start rows: what a
tap on that port's transmit side sees); timestamps are the event times in ns
(time_ps // 1000, as `frames.write_pcap` rounds).

Limits: frames are built through scapy (`frames.build_frame`, 0.1-1 ms each); identical
frames (raw frames of one size on one link) are built once and cached.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import frames as fr
from .frames import fields as F
from .scenario import LS_KINDS
from .trace import (EVENT_NAMES, FRAME_KINDS, PF_INT, PF_LAST, PF_LS, PF_RESPONSE, PF_TRIM, PF_TXN_ACK,
                    TraceInfo, codes)

__all__ = ["RX_EVENTS", "KIND_FRAMES", "MISSING_FIELDS", "LsFrames", "ls_frames", "frame_row", "select", "rows",
           "frames", "write_trace_pcap"]

RX_EVENTS = frozenset({"rx", "deliver", "pause_rx"})
OP_EVENTS = frozenset({"op_issue", "op_complete"})      # operation rows: no frame (pkt -1)
TXN_EVENT = "txn"                                       # a transaction joining a frame: not a frame

KIND_FRAMES: dict[str, F.FrameKind] = {
    "raw": F.FrameKind.RAW,
    "roce": F.FrameKind.ROCE,
    "roce_ack": F.FrameKind.ROCE,
    "cnp": F.FrameKind.CNP,
    "pfc": F.FrameKind.PFC,
    "ethlink": F.FrameKind.ETHLINK,
    "cbfc": F.FrameKind.CBFC,
    "uet": F.FrameKind.UET,
    "uet_ctrl": F.FrameKind.UET_CTRL,
}

# Header fields the trace does not carry (yet): they take `frames.fields` defaults.
_IP_UDP = ("udp_sport (flow entropy)", "dscp", "ttl (hops are not traced)")
MISSING_FIELDS: dict[str, tuple[str, ...]] = {
    "raw": (),
    "roce": _IP_UDP + ("reth_dlen (of Load/Store: the op's size)", "reth_rkey", "imm", "aeth_msn of READ responses",
                       "se, ackreq, fecn, becn, migreq, pkey (defaults)", "Load/Store dqpn and atomic data"),
    "roce_ack": _IP_UDP + ("atomic_orig",),
    "cnp": _IP_UDP,
    "pfc": (),
    "ethlink": ("el_flags", "atomic data", "without txn rows or an op table: el_txns after the first, LOAD_REQ length"),
    "cbfc": ("el_flags",),
    "uet": ("dscp (but the trimmed DSCP)", "ttl (hops are not traced)", "ses_message_id, ses_job_id",
            "pds_spdcid (the trace has the destination endpoint only: both PDC ids show it)",
            "pds_clear_psn_offset"),
    "uet_ctrl": ("dscp", "ttl (hops are not traced)", "pds_spdcid (as for uet)",
                 "NSCC state fields of ACK_CC (zeros)"),
}

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1

# Load/Store kinds (csrc/core.pxd LsKind, named in scenario.LS_KINDS).
LS_LOAD, LS_STORE, LS_STORE_ACK, LS_FADD, LS_CAS, LS_FENCE = (
    LS_KINDS.index(k) for k in ("load", "store", "store_ack", "fadd", "cas", "fence"))
LOAD_LENGTH_UNKNOWN = 64        # LOAD_REQ length when no op table is known (not in the trace)
# Load/Store over RoCEv2 has no QP in the engine (qp -1): the rebuilt frame names the
# target's RC QP for its issuer as LS_QPN_BASE + the sending GPU, never the management
# QPs 0 and 1 (IBA 3.5.7; Wireshark decodes their payload as MADs).
LS_QPN_BASE = 0x100000

_EO, _RO = F.ElOpcode, F.RoceOpcode
_EL_REQ = {LS_LOAD: _EO.LOAD_REQ, LS_STORE: _EO.STORE, LS_STORE_ACK: _EO.STORE, LS_FADD: _EO.ATOMIC_FADD,
           LS_CAS: _EO.ATOMIC_CAS}
_EL_RESP = {LS_LOAD: _EO.LOAD_RESP, LS_STORE_ACK: _EO.STORE_ACK, LS_FADD: _EO.ATOMIC_RESP,
            LS_CAS: _EO.ATOMIC_RESP}
_ATOMIC_OPS = frozenset({_EO.ATOMIC_FADD, _EO.ATOMIC_CAS, _EO.ATOMIC_RESP})
# RoCEv2 Load/Store opcodes whose operand or result travels in a header, not as payload.
_ROCE_ATOMIC = frozenset({_RO.FETCH_ADD, _RO.CMP_SWAP, _RO.ATOMIC_ACK})


class LsFrames:
    """The transactions of a run's Load/Store frames, rebuilt from its operation table
    (`Result.ls_ops`, or any array with src, dst, kind, size, addr, tag, next) and, for
    response frames, from the `deliver` rows of `table` (see the module doc)."""

    def __init__(self, ls_ops: np.ndarray | None, table: pa.Table | None = None) -> None:
        self._tx_pkt = np.zeros(0, dtype=np.int64)      # txn rows, sorted by (pkt, ntx)
        self._tx: dict[str, np.ndarray] = {}
        self._responses: dict[int, list[int]] = {}
        self.implied = False            # True: regenerated from the scenario, not given
        if table is not None:
            self._index_txns(table)
        if ls_ops is None:
            ls_ops = np.zeros(0, dtype=[(c, np.int64) for c in ("src", "dst", "kind", "size", "addr", "tag", "next")])
        ops = np.asarray(ls_ops)
        self.src = ops["src"].astype(np.int64)
        self.dst = ops["dst"].astype(np.int64)
        self.kind = ops["kind"].astype(np.int64)
        self.size = ops["size"].astype(np.int64)
        self.addr = ops["addr"].astype(np.int64)
        self.tag = ops["tag"].astype(np.int64)
        nxt = ops["next"].astype(np.int64)
        # next operation of the same GPU that is not a fence (fences carry no transaction)
        real_next = nxt.copy()
        hop = np.nonzero(real_next >= 0)[0]
        while len(hop):
            hop = hop[self.kind[real_next[hop]] == LS_FENCE]
            real_next[hop] = nxt[real_next[hop]]
            hop = hop[real_next[hop] >= 0]
        self._next = real_next
        if table is not None and len(ops):
            self._index_responses(table)

    @property
    def exact(self) -> bool:
        """True when the table had txn rows: frames are rebuilt from them alone."""
        return len(self._tx_pkt) > 0

    def _index_txns(self, table: pa.Table) -> None:
        sel = np.nonzero(codes(table, "event") == EVENT_NAMES.index("txn"))[0]
        if not len(sel):
            return
        cols = {c: table[c].to_numpy()[sel] for c in ("pkt", "ntx", "opcode", "flags", "psn", "size", "addr", "payload")}
        order = np.lexsort((cols["ntx"], cols["pkt"]))
        self._tx = {c: v[order] for c, v in cols.items()}
        self._tx_pkt = self._tx["pkt"]

    def _exact_txns(self, pkt: int) -> list[dict[str, int]] | None:
        """The transactions of frame `pkt` from its txn rows, in frame order; None if the
        table has none for it."""
        lo, hi = np.searchsorted(self._tx_pkt, [pkt, pkt + 1])
        if lo == hi:
            return None
        t = self._tx
        return [{"opcode": int(t["opcode"][i]),
                 "flags": int(F.ElTxnFlags.WANT_COMPLETION) if int(t["flags"][i]) & PF_TXN_ACK else 0,
                 "tag": int(t["psn"][i]) & 0xFFFF, "length": int(t["size"][i]), "addr": int(t["addr"][i]) & _U64}
                for i in range(lo, hi)]

    @classmethod
    def of_trace(cls, info: TraceInfo, table: pa.Table | None = None) -> "LsFrames | None":
        """The op table regenerated from the trace's `scenario_source` (None if the trace
        has none); tags are handed out round robin in issue order, as the engine does."""
        import json

        from . import _engine
        from .loadstore import build_ops
        from .scenario import Scenario

        src = info.metadata.get("scenario_source")
        if not src:
            return None
        sc = Scenario.from_dict(json.loads(src))
        n_hosts = len(info.hosts) if info.hosts else int(sum(k == "host" for k in info.node_kinds))
        ops, _ = build_ops(sc, n_hosts)
        if len(ops) == 0:
            ops = np.zeros(0, dtype=_engine.LSOP_DTYPE)
        if table is not None and len(ops):
            _overlay_op_rows(ops, table)
        real = ops["kind"] != LS_FENCE
        for g in np.unique(ops["src"]):
            idx = np.nonzero((ops["src"] == g) & real)[0]
            ops["tag"][idx] = np.arange(len(idx)) % sc.ls.tags
        out = cls(ops, table)
        out.implied = True
        return out

    def _index_responses(self, table: pa.Table) -> None:
        """Members of every response frame in `table`: each target answers in the order
        the requests reached it (deliver rows), and a frame takes the next `ntx` answers."""
        ev, kind = codes(table, "event"), codes(table, "kind")
        flags = table["flags"].to_numpy()
        ls = ((kind == FRAME_KINDS.index("ethlink")) | (kind == FRAME_KINDS.index("roce"))) & (flags & PF_LS != 0)
        ls &= ev != EVENT_NAMES.index("txn")
        resp = ls & (flags & PF_RESPONSE != 0)
        ri = np.nonzero(resp)[0]
        ri = ri[~np.isin(table["pkt"].to_numpy()[ri], self._tx_pkt)]     # frames without txn rows
        if not len(ri):
            return
        sel = np.nonzero(ls & ~resp & (ev == EVENT_NAMES.index("deliver")))[0]
        flow, ntx, dst = (table[c].to_numpy() for c in ("flow", "ntx", "dst"))
        answers: dict[int, list[int]] = {}
        for i in sel.tolist():
            for op in self._chain(int(flow[i]), max(int(ntx[i]), 1)):
                if self.kind[op] != LS_STORE:
                    answers.setdefault(int(self.dst[op]), []).append(op)
        pkt = table["pkt"].to_numpy()[ri]
        uids, first = np.unique(pkt, return_index=True)          # creation order
        rows = ri[first]
        src = table["src"].to_numpy()
        pos: dict[int, int] = {}
        where: dict[int, dict[int, list[int]]] = {}
        for target, seq in answers.items():
            idx: dict[int, list[int]] = {}
            for k, op in enumerate(seq):
                idx.setdefault(op, []).append(k)
            where[target] = idx
        for uid, i in zip(uids.tolist(), rows.tolist()):
            target, f, n = int(src[i]), int(flow[i]), max(int(ntx[i]), 1)
            seq = answers.get(target)
            if seq is None or f not in where[target]:
                continue
            start = pos.get(target, 0)
            cand = [k for k in where[target][f] if k >= start]
            if not cand:
                continue
            k = cand[0]
            self._responses[uid] = seq[k:k + n]
            pos[target] = k + n

    def _chain(self, first: int, n: int) -> list[int]:
        out = [first]
        while len(out) < n and out[-1] >= 0:
            out.append(int(self._next[out[-1]]))
        return [o for o in out if o >= 0]

    def members(self, row: Mapping[str, Any]) -> list[int]:
        """Operation indices of the transactions in the row's frame, in frame order."""
        first, n = int(row["flow"]), max(int(row.get("ntx", 1) or 1), 1)
        if not 0 <= first < len(self.kind):
            raise ValueError(f"Load/Store row: flow={first} is not an operation of the op table "
                             f"({len(self.kind)} operations)")
        if n == 1:
            return [first]
        if int(row["flags"]) & PF_RESPONSE:
            got = self._responses.get(int(row["pkt"]))
            if got is not None:
                return got
            # No deliver rows: assume the issuer's order (strict ordering keeps it).
            out, op = [first], first
            while len(out) < n:
                op = int(self._next[op])
                if op < 0:
                    break
                if self.kind[op] != LS_STORE and self.dst[op] == self.dst[first]:
                    out.append(op)
            return out
        return self._chain(first, n)

    def txns(self, row: Mapping[str, Any]) -> list[dict[str, int]]:
        """`el_txns` of an ethlink row (from its frame's txn rows, else from the op table),
        checked against its ntx, payload, tag and address."""
        response = bool(int(row["flags"]) & PF_RESPONSE)
        exact = self._exact_txns(int(row["pkt"]))
        if exact is not None:
            return self._checked(row, exact, sum(F.el_data_len(t["opcode"], t["length"]) for t in exact),
                                 "its txn rows")
        if not len(self.kind):
            raise ValueError(f"Load/Store row pkt {row['pkt']}: the table has no txn rows for this frame "
                             f"and no op table was given")
        ops = self.members(row)
        out, data = [], 0
        for op in ops:
            k = int(self.kind[op])
            table = _EL_RESP if response else _EL_REQ
            if k not in table:
                raise ValueError(f"Load/Store row pkt {row['pkt']}: operation {op} ({k}) has no "
                                 f"{'response' if response else 'request'} transaction")
            code = table[k]
            length = 8 if code in _ATOMIC_OPS else int(self.size[op])
            flags = int(F.ElTxnFlags.WANT_COMPLETION) if (not response and k == LS_STORE_ACK) else 0
            out.append({"opcode": int(code), "flags": flags, "tag": int(self.tag[op]) & 0xFFFF,
                        "length": length, "addr": int(self.addr[op]) & _U64})
            data += F.el_data_len(code, length)
        return self._checked(row, out, data, "the op table")

    @staticmethod
    def _checked(row: Mapping[str, Any], out: list[dict[str, int]], data: int, source: str) -> list[dict[str, int]]:
        want = max(int(row.get("ntx", 1) or 1), 1)
        first = out[0] if out else {}
        if (len(out) != want or data != int(row["payload"]) or first.get("tag") != int(row["psn"]) & 0xFFFF
                or first.get("addr") != int(row["addr"]) & _U64):
            raise ValueError(
                f"Load/Store row pkt {row['pkt']}: cannot rebuild its {want} transactions from {source} "
                f"(rebuilt {len(out)} with {data} B of data, the row says {row['payload']} B; first tag/addr "
                f"{first.get('tag')}/{first.get('addr')} vs {int(row['psn']) & 0xFFFF}/{int(row['addr']) & _U64}): "
                f"the trace does not say which operations share a frame")
        return out

    def size_of(self, row: Mapping[str, Any]) -> int:
        """Bytes the operation of a single-transaction row addresses."""
        lo, hi = np.searchsorted(self._tx_pkt, [int(row["pkt"]), int(row["pkt"]) + 1])
        if lo < hi:
            return int(self._tx["size"][lo])
        return int(self.size[int(row["flow"])])


def _overlay_op_rows(ops: np.ndarray, table: pa.Table) -> None:
    """Kind, size and destination of every operation the table has an op_issue row for
    (the engine's own record beats the regenerated draw)."""
    sel = np.nonzero((codes(table, "event") == EVENT_NAMES.index("op_issue"))
                     & (codes(table, "kind") == FRAME_KINDS.index("ethlink"))
                     & (table["flags"].to_numpy() & PF_LS != 0))[0]
    if not len(sel):
        return
    flow = table["flow"].to_numpy()[sel]
    ok = (flow >= 0) & (flow < len(ops))
    flow = flow[ok]
    sel = sel[ok]
    ops["kind"][flow] = table["opcode"].to_numpy()[sel]
    ops["size"][flow] = table["payload"].to_numpy()[sel]
    real = ops["kind"][flow] != LS_FENCE
    ops["dst"][flow[real]] = table["dst"].to_numpy()[sel][real]


class IntRecords:
    """The HPCC INT records of a trace's frames (see the module doc), from its rows."""

    def __init__(self, info: TraceInfo, table: pa.Table) -> None:
        n = table.num_rows
        ev = codes(table, "event") if n else np.zeros(0, dtype=np.int8)
        col = {c: table[c].to_numpy() for c in ("time_ps", "pkt", "node", "port", "size", "qbytes", "flags",
                                                 "src", "dst", "psn")} if n else {}
        self.recs: dict[int, list[dict[str, int]]] = {}
        self.echo: dict[tuple[int, int, int, int], int] = {}     # (time, host, peer, psn) -> data pkt
        self.made: dict[int, int] = {}                            # ACK pkt -> its first row's time
        if not n:
            return
        kind = codes(table, "kind")
        tx = np.nonzero((ev == EVENT_NAMES.index("tx_start")) & (col["port"] >= 0))[0]
        # each port's transmitted bytes after each of its frames: a cumulative sum per port
        order = tx[np.argsort(col["port"][tx], kind="stable")]
        sizes = col["size"][order].astype(np.int64)
        cum = np.cumsum(sizes)
        starts = np.r_[0, np.nonzero(np.diff(col["port"][order]))[0] + 1]
        base = np.repeat(cum[starts] - sizes[starts], np.diff(np.r_[starts, len(order)]))
        sent = np.empty(n, dtype=np.int64)
        sent[order] = cum - base
        switch = np.asarray([k == "switch" for k in info.node_kinds] or [False] * len(info.nodes))
        intf = (col["flags"] & PF_INT) != 0
        data = intf & (kind == FRAME_KINDS.index("roce"))
        rec = tx[data[tx] & switch[col["node"][tx]]] if len(switch) else tx[:0]
        rate = info.port_rate_bps if len(info.port_rate_bps) else np.zeros(info.n_ports, dtype=np.int64)
        for i in rec.tolist():
            self.recs.setdefault(int(col["pkt"][i]), []).append({
                "rate_mbps": int(rate[col["port"][i]]) // 1_000_000 & _U32,
                "ts_ns": int(col["time_ps"][i]) // 1000 & _U32,
                "tx_bytes": int(sent[i]) & _U32,
                "qlen": min(int(col["qbytes"][i]), _U32)})
        for i in np.nonzero(data & (ev == EVENT_NAMES.index("deliver")))[0].tolist():
            self.echo[(int(col["time_ps"][i]), int(col["dst"][i]), int(col["src"][i]), int(col["psn"][i]))] = \
                int(col["pkt"][i])
        acks = np.nonzero(intf & (kind == FRAME_KINDS.index("roce_ack")))[0]
        for i in acks[::-1].tolist():                   # rows in time order: keep each ACK's first
            self.made[int(col["pkt"][i])] = int(col["time_ps"][i])

    @staticmethod
    def count(row: Mapping[str, Any]) -> int:
        """Records a traced HPCC frame carries, from its size."""
        base = F.roce_frame_bytes(int(row["opcode"]), int(row["payload"]), 0, 0)
        return max(0, (int(row["size"]) - base) // F.HPCC_INT_HOP.size)

    def hops(self, row: Mapping[str, Any]) -> list[dict[str, int]]:
        """The INT records of a traced frame with flag PF_INT (zeros where not derivable)."""
        n = self.count(row)
        pkt = int(row["pkt"])
        if row["kind"] == "roce_ack":
            pkt = self.echo.get((self.made.get(pkt, -1), int(row["src"]), int(row["dst"]), int(row["psn"])), -1)
        got = self.recs.get(pkt, [])[:n]
        return got + [dict.fromkeys(F.INT_HOP_KEYS, 0) for _ in range(n - len(got))]


def int_records(info: TraceInfo, table: pa.Table) -> "IntRecords | None":
    """What rebuilds the HPCC INT records of `table`'s frames (a whole trace), or None
    when it has no INT frame."""
    if not table.num_rows or not np.any(table["flags"].to_numpy() & PF_INT):
        return None
    return IntRecords(info, table)


def _macs(event: str, port: int, info: TraceInfo, received: bool = False) -> dict[str, int]:
    if port < 0:
        return {}
    peer = int(info.port_peer[port])
    if received or event in RX_EVENTS:
        return {"src_mac": fr.mac_of_port(peer), "dst_mac": fr.mac_of_port(port)}
    return {"src_mac": fr.mac_of_port(port), "dst_mac": fr.mac_of_port(peer)}


def _ls_of(info: TraceInfo, ls: "LsFrames | np.ndarray | None") -> "LsFrames | None":
    if isinstance(ls, LsFrames):
        return ls
    if ls is not None:
        return LsFrames(ls)
    cached = info.__dict__.get("_ls_frames", False)
    if cached is False:
        try:
            cached = LsFrames.of_trace(info)
        except Exception:        # an older or foreign scenario source: map rows directly
            cached = None
        info.__dict__["_ls_frames"] = cached
    return cached


def frame_row(row: Mapping[str, Any], info: TraceInfo, *, ls: "LsFrames | np.ndarray | None" = None,
              hpcc: "IntRecords | None" = None) -> dict[str, Any]:
    """The `ethlink.frames` row of one trace row (a mapping of trace columns, enums as
    names); `frames.build_frame` turns it into wire bytes. `ls` (an `LsFrames`, or
    `Result.ls_ops`) rebuilds the transactions of Load/Store frames; by default they are
    regenerated from the trace's scenario (see the module doc). `hpcc` (`int_records` of
    the whole trace) gives HPCC frames their INT records; without it they carry zeros."""
    kind = row["kind"]
    if row["event"] in OP_EVENTS:
        raise ValueError(f"trace row: {row['event']} rows are operations (flow {row['flow']}), not frames")
    if row["event"] == TXN_EVENT:
        raise ValueError(f"trace row: txn rows are transactions (operation {row['flow']}) of frame pkt "
                         f"{row['pkt']}, not frames; show one of that packet's other rows")
    try:
        fk = KIND_FRAMES[kind]
    except KeyError:
        raise ValueError(f"trace row: kind {kind!r} has no frame format") from None
    out: dict[str, Any] = {"frame_kind": fk.value, "frame_bytes": int(row["size"]), "pcp": int(row["prio"])}
    src, dst, opcode = int(row["src"]), int(row["dst"]), int(row["opcode"])
    # A credit row at the update's receiver (node = its dst) is addressed as received.
    received = kind == "cbfc" and row["event"] == "credit" and int(row["node"]) == dst
    out.update(_macs(row["event"], int(row["port"]), info, received))
    is_ls = bool(int(row.get("flags", 0)) & PF_LS)
    if kind in ("roce", "roce_ack", "cnp"):
        out.update(ip_src=fr.ip_of_host(src), ip_dst=fr.ip_of_host(dst), ecn=int(row["ecn"]),
                   psn=int(row["psn"]) & 0xFFFFFF)
        if int(row.get("qp", -1)) >= 0:
            out["dqpn"] = fr.qpn_of_endpoint(int(row["qp"]))
        elif is_ls:
            out["dqpn"] = (LS_QPN_BASE + src) & 0xFFFFFF
        if kind != "cnp":
            out.update(_roce_fields(kind, opcode, row, _ls_of(info, ls) if is_ls else None, is_ls))
        if kind != "cnp" and int(row.get("flags", 0)) & PF_INT:
            out["int_hops"] = (hpcc or IntRecords(info, pa.table({}))).hops(row)
            pad = int(row["size"]) - F.roce_frame_bytes(opcode, out.get("payload_len", 0), 0, len(out["int_hops"]))
            if 0 < pad <= 3:
                out["pad_cnt"] = pad
    elif kind == "pfc":
        # One class per frame: opcode holds the class-enable vector, psn its pause time.
        vector = opcode or 1 << int(row["prio"])
        quanta = int(row["psn"])
        out.update(pfc_vector=vector, pfc_times=[quanta if vector >> c & 1 else 0 for c in range(F.PFC_CLASSES)])
    elif kind == "ethlink":
        out.update(el_src=src, el_dst=dst, ecn=int(row["ecn"]))
        lsf = _ls_of(info, ls)
        if lsf is not None and int(row.get("flow", -1)) >= 0:
            try:
                out["el_txns"] = lsf.txns(row)
            except ValueError:
                # An op table regenerated from the scenario that does not match the row:
                # a single transaction still maps from the row's own columns.
                if not lsf.implied or int(row.get("ntx", 1) or 1) > 1:
                    raise
        if "el_txns" not in out:
            payload = int(row["payload"])
            length = payload
            if opcode == _EO.LOAD_REQ:
                length = LOAD_LENGTH_UNKNOWN
            elif opcode in _ATOMIC_OPS:
                length = 8
            out.update(el_opcode=opcode, el_tag=int(row["psn"]) & 0xFFFF, el_addr=int(row["addr"]) & _U64,
                       el_length=length)
    elif kind == "cbfc":
        out.update(el_src=src, el_dst=dst, cbfc_vc=int(row["prio"]), cbfc_credits=int(row["addr"]) & _U32)
    elif kind in ("uet", "uet_ctrl"):
        out.update(_uet_fields(kind, opcode, row))
    return out


def _uet_fields(kind: str, opcode: int, row: Mapping[str, Any]) -> dict[str, Any]:
    """UET frame columns of a trace row (csrc/uet.pxd says which Packet field holds what).
    PDC ids are the QP endpoint numbers; the UDP source port carries the packet's entropy,
    derived from its packet id (the engine's path hash takes the same id)."""
    src, dst, qp, psn = int(row["src"]), int(row["dst"]), int(row.get("qp", -1)), int(row["psn"])
    flags = int(row.get("flags", 0))
    out: dict[str, Any] = {"ip_src": fr.ip_of_host(src), "ip_dst": fr.ip_of_host(dst), "ecn": int(row["ecn"]),
                           "pds_dpdcid": max(qp, 0) & 0xFFFF, "pds_spdcid": max(qp, 0) & 0xFFFF,
                           "udp_sport": 0xC000 | ((int(row["pkt"]) * 0x9E37) & 0x3FFF)}
    if kind == "uet":
        out.update(pds_psn=psn & _U32, pds_retrans=int(row.get("syndrome", 0)) & 1,
                   ses_opcode=opcode, ses_eom=int(flags & PF_LAST != 0), ses_som=int(int(row["addr"]) == 0),
                   ses_buffer_offset=int(row["addr"]) & _U64, payload_len=int(row["payload"]))
        if flags & PF_TRIM:
            out["dscp"] = F.UET_TRIMMED_DSCP
    elif opcode == F.UetPdsType.NACK:
        out.update(pds_type=int(F.UetPdsType.NACK), pds_psn=psn & _U32,
                   pds_nack_code=int(row.get("syndrome", 0)))
    else:
        out.update(pds_type=int(F.UetPdsType.ACK_CC), pds_cack_psn=(psn - 1) & _U32,
                   pds_ack_psn_offset=int(row.get("ntx", 0)) & 0xFFFF, pds_sack_bitmap=int(row["addr"]) & _U64,
                   pds_ecn_marked=int(row.get("syndrome", 0)) & 1)
    return out


def _roce_fields(kind: str, opcode: int, row: Mapping[str, Any], lsf: "LsFrames | None" = None,
                 is_ls: bool = False) -> dict[str, Any]:
    payload = int(row["payload"])
    if is_ls and opcode in _ROCE_ATOMIC:
        payload = 0                       # operand / original value travel in AtomicETH / AtomicAckETH
    out: dict[str, Any] = {"opcode": opcode, "payload_len": payload}
    try:
        fmt = F.ROCE_OPCODES[F.RoceOpcode(opcode)]
    except ValueError:
        return out                       # build_frame names the unknown opcode
    # Pad bytes (to a 4-byte multiple) are whatever the traced size has beyond the headers.
    pad = int(row["size"]) - F.roce_frame_bytes(opcode, payload)
    if 0 < pad <= 3:
        out["pad_cnt"] = pad
    if F.RETH in fmt.headers:
        out["reth_va"] = int(row["addr"]) & _U64
        if is_ls:
            # One Load/Store operation per RoCE frame: the DMA length is its size.
            out["reth_dlen"] = lsf.size_of(row) if lsf is not None else payload
    if F.ATOMIC_ETH in fmt.headers and is_ls:
        out["atomic_va"] = int(row["addr"]) & _U64
    if F.AETH in fmt.headers:
        out["aeth_syndrome"] = int(row.get("syndrome", 0))
        if kind == "roce_ack":
            out["aeth_msn"] = int(row["addr"]) & 0xFFFFFF
    return out


def select(table: pa.Table, *, nodes: Iterable[int] = (), ports: Iterable[int] = (),
           events: Iterable[str] = (), flows: Iterable[int] = (), pkts: Iterable[int] = (),
           limit: int | None = None) -> tuple[pa.Table, np.ndarray]:
    """Rows matching every given filter (an empty filter matches all), first `limit` of
    them; returns (rows, their row numbers in `table`)."""
    keep = np.ones(table.num_rows, dtype=bool)
    for col, vals in (("node", nodes), ("port", ports), ("flow", flows), ("pkt", pkts)):
        vals = list(vals)
        if vals:
            keep &= np.isin(table[col].to_numpy(), np.asarray(vals, dtype=np.int64))
    ev = list(events)
    if ev:
        bad = [e for e in ev if e not in EVENT_NAMES]
        if bad:
            raise ValueError(f"no event {bad[0]!r}; events: {', '.join(EVENT_NAMES)}")
        keep &= np.isin(codes(table, "event"), [EVENT_NAMES.index(e) for e in ev])
    idx = np.nonzero(keep)[0]
    if limit is not None:
        idx = idx[:limit]
    return table.take(pa.array(idx)), idx


def rows(table: pa.Table, chunk: int = 4096) -> Iterator[dict[str, Any]]:
    """The rows of `table` as dicts (enums as names), a chunk at a time."""
    for lo in range(0, table.num_rows, chunk):
        yield from table.slice(lo, chunk).to_pylist()


def frames(table: pa.Table, info: TraceInfo, *, ls_ops: np.ndarray | None = None,
           context: pa.Table | None = None) -> Iterator[tuple[int, bytes]]:
    """(time_ps, wire bytes without FCS) of every row of `table`. Load/Store frames are
    rebuilt from `ls_ops` (`Result.ls_ops`; default: regenerated from the trace's
    scenario) with response membership from the deliver rows of `context` (the whole
    trace `table` was selected from; default `table`)."""
    cache: dict[tuple, bytes] = {}
    ls: LsFrames | None = None
    kinds = set(kinds_in(table)) if table.num_rows else set()
    if kinds & {"ethlink", "roce"}:
        ls = ls_frames(info, context if context is not None else table, ls_ops)
    hp = int_records(info, context if context is not None else table) if kinds & {"roce", "roce_ack"} else None
    for r in rows(table):
        fr_row = frame_row(r, info, ls=ls, hpcc=hp)
        key = tuple((k, _hashable(v)) for k, v in sorted(fr_row.items()))
        raw = cache.get(key)
        if raw is None:
            raw = fr.build_frame(fr_row)
            if len(cache) >= 4096:
                cache.clear()
            cache[key] = raw
        yield int(r["time_ps"]), raw


def ls_frames(info: TraceInfo, table: pa.Table, ls_ops: np.ndarray | None = None) -> "LsFrames | None":
    """What rebuilds the Load/Store frames of `table` (a whole trace, or what a selection
    was taken from): its txn rows when it has them (exact), else `ls_ops`, else the op
    table regenerated from the trace's scenario; None when nothing applies."""
    if ls_ops is not None:
        return LsFrames(ls_ops, table)
    if table.num_rows and bool(np.any(codes(table, "event") == EVENT_NAMES.index(TXN_EVENT))):
        return LsFrames(None, table)
    try:
        return LsFrames.of_trace(info, table)
    except Exception:        # an older or foreign scenario source: rows map directly
        return None


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def write_trace_pcap(table: pa.Table, info: TraceInfo, out: str | os.PathLike[str], *, port: int,
                     event: str = "tx_start", flows: Iterable[int] = (), limit: int | None = None,
                     ls_ops: np.ndarray | None = None) -> int:
    """Write the frames of one capture point (`event` rows at `port`) to a nanosecond
    pcap at `out`; returns the frame count. `ls_ops`: see `frames`."""
    if not 0 <= port < info.n_ports:
        raise ValueError(f"port {port}: this trace has ports 0..{info.n_ports - 1}")
    sel, _ = select(table, ports=[port], events=[event], flows=flows, limit=limit)
    return fr.write_pcap(Path(out), frames(sel, info, ls_ops=ls_ops, context=table))


def kinds_in(table: pa.Table) -> list[str]:
    """Frame kind names present in `table`."""
    return [FRAME_KINDS[c] for c in np.unique(codes(table, "kind"))]
