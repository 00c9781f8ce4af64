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
| qp       | dqpn                                      | -                      | -                     |
| opcode   | opcode                                    | pfc_vector             | el_opcode             |
| payload  | payload_len                               | -                      | el_length             |
| addr     | reth_va (RETH opcodes); roce_ack: aeth_msn | -                     | el_addr               |
| syndrome | aeth_syndrome (AETH opcodes)              | -                      | -                     |

`MISSING_FIELDS` lists, per kind, the header fields the trace does not carry yet: they
take the frame builder's defaults, so those frames are well formed but those fields are
not the simulated ones.

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
from .trace import EVENT_NAMES, FRAME_KINDS, TraceInfo, codes

__all__ = ["RX_EVENTS", "KIND_FRAMES", "MISSING_FIELDS", "frame_row", "select", "rows", "frames",
           "write_trace_pcap"]

RX_EVENTS = frozenset({"rx", "deliver", "pause_rx"})

KIND_FRAMES: dict[str, F.FrameKind] = {
    "raw": F.FrameKind.RAW,
    "roce": F.FrameKind.ROCE,
    "roce_ack": F.FrameKind.ROCE,
    "cnp": F.FrameKind.CNP,
    "pfc": F.FrameKind.PFC,
    "ethlink": F.FrameKind.ETHLINK,
    "cbfc": F.FrameKind.CBFC,
}

# Header fields the trace does not carry (yet): they take `frames.fields` defaults.
_IP_UDP = ("udp_sport (flow entropy)", "dscp", "ttl (hops are not traced)")
MISSING_FIELDS: dict[str, tuple[str, ...]] = {
    "raw": (),
    "roce": _IP_UDP + ("reth_dlen", "reth_rkey", "imm", "aeth_msn of READ responses",
                       "se, ackreq, fecn, becn, migreq, pkey (defaults)"),
    "roce_ack": _IP_UDP + ("atomic_orig",),
    "cnp": _IP_UDP,
    "pfc": (),
    "ethlink": ("el_txns (more than one transaction per frame)", "el_length of LOAD_REQ", "el_txn_flags",
                "el_flags", "atomic_swap_add", "atomic_compare", "atomic_orig"),
    "cbfc": ("cbfc_credits", "el_flags"),
}

_U64 = (1 << 64) - 1


def _macs(event: str, port: int, info: TraceInfo) -> dict[str, int]:
    if port < 0:
        return {}
    peer = int(info.port_peer[port])
    if event in RX_EVENTS:
        return {"src_mac": fr.mac_of_port(peer), "dst_mac": fr.mac_of_port(port)}
    return {"src_mac": fr.mac_of_port(port), "dst_mac": fr.mac_of_port(peer)}


def frame_row(row: Mapping[str, Any], info: TraceInfo) -> dict[str, Any]:
    """The `ethlink.frames` row of one trace row (a mapping of trace columns, enums as
    names); `frames.build_frame` turns it into wire bytes."""
    kind = row["kind"]
    try:
        fk = KIND_FRAMES[kind]
    except KeyError:
        raise ValueError(f"trace row: kind {kind!r} has no frame format") from None
    out: dict[str, Any] = {"frame_kind": fk.value, "frame_bytes": int(row["size"]), "pcp": int(row["prio"])}
    out.update(_macs(row["event"], int(row["port"]), info))
    src, dst, opcode = int(row["src"]), int(row["dst"]), int(row["opcode"])
    if kind in ("roce", "roce_ack", "cnp"):
        out.update(ip_src=fr.ip_of_host(src), ip_dst=fr.ip_of_host(dst), ecn=int(row["ecn"]),
                   psn=int(row["psn"]) & 0xFFFFFF)
        if int(row.get("qp", -1)) >= 0:
            out["dqpn"] = int(row["qp"]) & 0xFFFFFF
        if kind != "cnp":
            out.update(_roce_fields(kind, opcode, row))
    elif kind == "pfc":
        # One class per frame: opcode holds the class-enable vector, psn its pause time.
        vector = opcode or 1 << int(row["prio"])
        quanta = int(row["psn"])
        out.update(pfc_vector=vector, pfc_times=[quanta if vector >> c & 1 else 0 for c in range(F.PFC_CLASSES)])
    elif kind == "ethlink":
        out.update(el_src=src, el_dst=dst, ecn=int(row["ecn"]), el_opcode=opcode, el_tag=int(row["psn"]) & 0xFFFF,
                   el_addr=int(row["addr"]) & _U64, el_length=int(row["payload"]))
    elif kind == "cbfc":
        out.update(el_src=src, el_dst=dst, cbfc_vc=int(row["prio"]))
    return out


def _roce_fields(kind: str, opcode: int, row: Mapping[str, Any]) -> dict[str, Any]:
    payload = int(row["payload"])
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


def frames(table: pa.Table, info: TraceInfo) -> Iterator[tuple[int, bytes]]:
    """(time_ps, wire bytes without FCS) of every row of `table`."""
    cache: dict[tuple, bytes] = {}
    for r in rows(table):
        fr_row = frame_row(r, info)
        key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(fr_row.items()))
        raw = cache.get(key)
        if raw is None:
            raw = fr.build_frame(fr_row)
            if len(cache) >= 4096:
                cache.clear()
            cache[key] = raw
        yield int(r["time_ps"]), raw


def write_trace_pcap(table: pa.Table, info: TraceInfo, out: str | os.PathLike[str], *, port: int,
                     event: str = "tx_start", flows: Iterable[int] = (), limit: int | None = None) -> int:
    """Write the frames of one capture point (`event` rows at `port`) to a nanosecond
    pcap at `out`; returns the frame count."""
    if not 0 <= port < info.n_ports:
        raise ValueError(f"port {port}: this trace has ports 0..{info.n_ports - 1}")
    sel, _ = select(table, ports=[port], events=[event], flows=flows, limit=limit)
    return fr.write_pcap(Path(out), frames(sel, info))


def kinds_in(table: pa.Table) -> list[str]:
    """Frame kind names present in `table`."""
    return [FRAME_KINDS[c] for c in np.unique(codes(table, "kind"))]
