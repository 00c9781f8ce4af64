"""Trace files: the engine's trace records as one Arrow schema, streamed to an IPC file.

What it models: a row per packet event at one node (and port), as the engine's one trace
point (`trace_pkt` in csrc/core.pxd) writes it into a fixed-size `TraceRec` in a C ring.
When the ring is full (`run.trace_capacity` rows, 16384 by default) the loop returns and
`Engine.take_trace` copies it out with one memcpy. `TraceWriter.write` hands the records to
its worker thread, which splits them into contiguous columns in one pass without the GIL
(`_engine.trace_columns`), wraps each column as an Arrow array without a copy (no Python
object per row), compresses and streams the batch, while the engine, which runs without
the GIL, fills the ring again. One batch is in flight at most.

Schema (`TRACE_SCHEMA`, version `SCHEMA_VERSION`; every column non-null):

| column   | Arrow type               | unit / values | meaning | frame kinds |
| -------- | ------------------------ | ------------- | ------- | ----------- |
| time_ps  | int64                    | ps            | simulated time of the event | all |
| pkt      | int64                    | id            | packet uid, unique in the run, increasing in creation order; -1 for an event without a packet | all |
| qbytes   | int64                    | bytes         | bytes in the queue (port x prio) after the event: enqueue, tx_start, mark, drop at a queue; pause_tx: the ingress bytes that crossed XOFF/XON; 0 where no queue is involved (rx, deliver, drop before routing) | all |
| addr     | int64                    | bytes / count | raw and roce data: byte offset of the payload within its flow or message (the RETH VA of READ REQUEST and WRITE FIRST/ONLY); roce_ack: AETH MSN; ethlink: memory address | raw, roce, roce_ack, ethlink |
| node     | int32                    | node index    | node where the event happened; names in metadata `nodes` | all |
| port     | int32                    | port index    | port of the event (egress queue for enqueue/tx_start/mark/drop at a queue/pause_tx, receiving port for rx/deliver/pause_rx); -1 when not at a port; table in metadata `ports` | all |
| flow     | int32                    | flow index    | flow (raw) or message (RoCE) the packet belongs to; -1 for control frames (ACK, CNP, PFC) | raw, roce, ethlink |
| src      | int32                    | host index    | source host (IPv4 address: `frames.ip_of_host`); pfc and cbfc: the sending node's index | all |
| dst      | int32                    | host index    | destination host; pfc and cbfc: the peer node's index | all |
| size     | int32                    | bytes         | Ethernet frame length, FCS included, preamble and IFG excluded; >= 64 | all |
| payload  | int32                    | bytes         | payload carried (raw data bytes, RoCE payload, EthLink data); 0 for control frames | raw, roce, ethlink |
| psn      | int32                    | count         | raw: frame number within its flow; roce, roce_ack, cnp: PSN (not wrapped at 2**24); pfc: pause time of the enabled class, quanta of 512 bit times (0 resumes); ethlink: transaction tag | all |
| qp       | int32                    | QP endpoint   | QP endpoint the frame is addressed to (RoCE BTH DestQP on the wire: `frames.qpn_of_endpoint(qp)` = 0x100 + qp); -1 none | roce, roce_ack, cnp |
| ntx      | int32                    | count         | Load/Store transactions carried in the frame (coalesced ethlink frames carry several; `flow` is the first operation's index, `psn` its tag, `addr` its address); 0 for other frames | ethlink (and roce with the Load/Store flag) |
| event    | dictionary<int8, string> | EVENT_NAMES   | what happened (enqueue, tx_start, rx, drop, mark, deliver, pause_tx, pause_rx, ...) | all |
| kind     | dictionary<int8, string> | FRAME_KINDS   | frame kind | all |
| prio     | uint8                    | 0..7          | IEEE 802.1Q priority (PCP); pfc: the paused class | all |
| ecn      | uint8                    | 0..3          | IP ECN codepoint, RFC 3168: 0 Not-ECT, 1 ECT(1), 2 ECT(0), 3 CE | roce, cnp, ethlink |
| reason   | dictionary<int8, string> | DROP_REASONS  | why a drop happened; "none" for every other event | all (drop rows) |
| opcode   | uint8                    | code          | BTH opcode (roce, roce_ack, cnp); pfc: class-enable vector; EthLink opcode; 0 for raw | roce, roce_ack, cnp, pfc, ethlink |
| flags    | uint8                    | bits          | engine packet flags: 1 last packet of its flow/message, 4 Load/Store frame, 8 Load/Store response, 16 corrupted on the wire (cleared by the receiver's FCS check), 64 carries an HPCC INT header (data frames and the ACKs echoing it); txn rows: 32 a store that wants a completion | all |
| syndrome | uint8                    | code          | AETH syndrome: 0x1F ACK, 0x60 NAK (PSN sequence error), ...; 0 otherwise | roce_ack |

Rows without a frame: `op_issue` / `op_complete` (pkt -1) at the issuing host: `flow` the
message or Load/Store operation, `payload` its bytes, `addr` the message's bytes (int64)
or the Load/Store operation's address, `opcode` its verb (RoCE/raw) or LsKind (Load/Store:
0 load, 1 store, 2 store with completion, 3 fetch-add, 4 compare-swap, 5 fence). `txn`
rows: a Load/Store transaction joined frame `pkt` at the GPU (`node`) that builds it:
`flow` the operation, `psn` its tag, `addr` its address, `size` its length field (bytes
it addresses, 8 for atomics), `payload` the data it carries, `opcode` its own opcode
(EthLink ElOpcode, or BTH with the RoCE header profile), `ntx` its place in the frame
(0-based), `port` the frame's egress port, flags 4 | 8 (response) | 32 (a store that
wants a completion). A frame's transactions are its txn rows in ntx order.

The dictionaries are the whole names tables (the same in every batch, so the IPC file
holds each once); a column's index is the engine's enum value.

File metadata (schema metadata, all values strings): `schema_version`; `scenario` (name);
`scenario_source` (the scenario as JSON, after overrides; `scenario_format` = "json");
`seed`; `ethlink_version`; `trace_level` (off|endpoints|hop); `nodes` (JSON list of node
names, by node index); `node_kinds` (JSON list, "host"|"switch"); `hosts` (JSON list: host
index -> node index); `ports` (JSON object of lists by port index: node, peer, rate_bps,
delay_ps); `filters` (JSON: nodes, flows, events kept; empty lists keep all);
`flows` and `ls_ops` (how many flows/messages and Load/Store operations the run had: the
`flow` column indexes them); `complete` ("true"|"false"); `incomplete_reason` (why an
incomplete trace stopped, "" when complete); `rows`, `batches`, `batch_rows` (JSON list
of each batch's rows) and `checksum` (`row_checksum` of every row, 16 hex digits) in the
finished file only. Everything is a function of the scenario, seed and options, so the
same run gives a byte-identical file.

Reading checks a file before anything uses it (`_check`): the schema, the metadata's own
tables (every port's node and peer, every host in range), Arrow's full validation of
every buffer and dictionary index, the names tables, the row counts and checksum against
the metadata (rows removed or altered), every index column against the metadata (node,
port, flow, src, dst, prio, ecn), no negative count or time, and time never going back.
Whatever fails, the reader raises TraceError naming the file and the problem, never
another exception.

Batches are compressed (Arrow IPC body compression) with lz4 by default, or zstd, or not
at all. The ethlink-mixed demo's hop-level trace (6.46 M rows) takes 35 B per row with lz4
(227 MB), 17 B with zstd (109 MB), 80 B uncompressed (517 MB). zstd costs more time: on the 64:1
incast-dcqcn, hop-level tracing slows the run 1.4x uncompressed, 1.4x to 1.9x with lz4
and 1.8x to 2.1x with zstd (benchmarks/README.md).

Files and interruptions: an Arrow IPC file is the 8 B file head, an IPC stream (schema,
dictionaries, batches, end marker) and a footer. While a run goes, the writer writes the
head and the stream to `trace.arrow.partial`, a batch at a time straight to the OS (no
user-space buffer), its schema saying complete=false. So even a hard kill (SIGKILL; a
power cut may lose what the OS had not flushed) leaves every batch written before it:
`read_trace("trace.arrow.partial")` returns the whole ones. On close, normal or on an
exception or Ctrl-C, the writer appends the footer, whose schema copy carries the final
metadata (complete true or false, rows, batches), and renames the file to
`trace.arrow` (no fsync: a killed process never leaves a torn `trace.arrow`, a power
cut may); nothing is re-read or re-encoded (see `_finish_file`). File readers use
the footer's schema; the stream's copy at the head keeps the metadata the run started
with. Ctrl-C (or SIGTERM, SIGHUP) during a batch write is held until the batch is
written, so a batch is in the file whole and counted, or not at all.

Filters (`TraceFilter`: node names, flows, event names) go beyond the engine's levels
(off / endpoints / hop). They are applied by the writer to each numpy batch before
conversion (a vectorised mask): their cost is Python time per batch, not per row, and the
engine still writes every record of its level; the filters are recorded in the metadata.

Limits: the names tables mirror the enums of csrc/core.pxd by position (a test parses
core.pxd); a file written with a longer table is read only if ours is a prefix-compatible
match. Node and port names are indices; `TraceInfo` maps them back.
"""
from __future__ import annotations

import difflib
import json
import mmap
import os
import signal
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import _engine
from .topology import HOST

__all__ = [
    "SCHEMA_VERSION", "TRACE_SCHEMA", "EVENT_NAMES", "FRAME_KINDS", "DROP_REASONS", "LEVELS",
    "PF_LAST", "PF_LS", "PF_RESPONSE", "PF_CORRUPT", "PF_TXN_ACK", "PF_INT", "PF_TRIM",
    "COMPRESSIONS", "DEFAULT_COMPRESSION", "TraceError", "TraceFilter", "TraceWriter", "TraceInfo", "records_to_batch",
    "read_trace", "read_trace_head", "simulation_metadata", "partial_path",
]

SCHEMA_VERSION = "1"

# Names of the engine's enums, in the order of csrc/core.pxd (index = enum value).
EVENT_NAMES = ("enqueue", "tx_start", "rx", "drop", "mark", "deliver", "pause_tx", "pause_rx",
               "credit", "llr_replay", "op_issue", "op_complete", "txn", "trim")       # TraceEvent TE_*
FRAME_KINDS = ("raw", "roce", "roce_ack", "cnp", "pfc", "ethlink", "cbfc", "uet", "uet_ctrl")     # FrameKind FK_*
DROP_REASONS = ("none", "buffer_full", "queue_limit", "no_route", "fcs", "watchdog", "ttl",
                "headroom")                                                     # DropReason DR_*

# Bits of the `flags` column (csrc/core.pxd PacketFlag; PF_ROUTED never reaches a trace).
PF_LAST, PF_LS, PF_RESPONSE, PF_CORRUPT, PF_TXN_ACK, PF_INT = 1, 4, 8, 16, 32, 64
PF_TRIM = 128                      # csrc/core.pxd PacketFlag: a UET frame trimmed to its headers

LEVELS = ("off", "endpoints", "hop")
COMPRESSIONS = ("none", "zstd", "lz4")
DEFAULT_COMPRESSION = "lz4"     # under 2x slowdown at hop level; zstd halves the file (module doc)

ENUM_TYPE = pa.dictionary(pa.int8(), pa.string())
ENUMS: dict[str, tuple[str, ...]] = {"event": EVENT_NAMES, "kind": FRAME_KINDS, "reason": DROP_REASONS}
_DICTIONARIES = {k: pa.array(v, type=pa.string()) for k, v in ENUMS.items()}

# (column, Arrow type, unit) in TraceRec order; meanings in the module docstring.
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("time_ps", pa.int64(), "ps"),
    ("pkt", pa.int64(), "packet uid"),
    ("qbytes", pa.int64(), "bytes"),
    ("addr", pa.int64(), "bytes"),
    ("node", pa.int32(), "node index"),
    ("port", pa.int32(), "port index"),
    ("flow", pa.int32(), "flow index"),
    ("src", pa.int32(), "host index"),
    ("dst", pa.int32(), "host index"),
    ("size", pa.int32(), "bytes"),
    ("payload", pa.int32(), "bytes"),
    ("psn", pa.int32(), "count"),
    ("qp", pa.int32(), "QP endpoint"),
    ("ntx", pa.int32(), "count"),
    ("event", ENUM_TYPE, "EVENT_NAMES"),
    ("kind", ENUM_TYPE, "FRAME_KINDS"),
    ("prio", pa.uint8(), "802.1Q PCP"),
    ("ecn", pa.uint8(), "RFC 3168 codepoint"),
    ("reason", ENUM_TYPE, "DROP_REASONS"),
    ("opcode", pa.uint8(), "code"),
    ("flags", pa.uint8(), "bits"),
    ("syndrome", pa.uint8(), "AETH syndrome"),
)

TRACE_SCHEMA = pa.schema([pa.field(n, t, nullable=False, metadata={"unit": u}) for n, t, u in COLUMNS])

# Metadata every trace carries (the writer adds filters, complete, rows, batches, reason).
REQUIRED_METADATA = ("schema_version", "scenario", "seed", "ethlink_version", "trace_level",
                     "nodes", "ports", "complete")


class TraceError(Exception):
    """A trace file that cannot be read or written; the message names the file."""


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where the stream of a trace being written lives: `trace.arrow.partial`."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


# ---------------------------------------------------------------------------------------
# numpy records -> Arrow

def records_to_batch(recs: np.ndarray) -> pa.RecordBatch:
    """One RecordBatch from engine trace records (a numpy structured array of
    `_engine.TRACE_DTYPE`). The engine splits them into contiguous columns in one pass
    (`_engine.trace_columns`, without the GIL); Arrow wraps each column without a copy."""
    recs = np.ascontiguousarray(recs)
    if recs.dtype != _engine.TRACE_DTYPE:
        raise TraceError(f"trace records: dtype {recs.dtype} is not the engine's TraceRec "
                         f"({_engine.TRACE_DTYPE})")
    arrays: list[pa.Array] = []
    for (name, typ, _), col in zip(COLUMNS, _engine.trace_columns(recs)):
        if typ == ENUM_TYPE:
            names = ENUMS[name]
            if len(col) and int(col.max()) >= len(names):
                raise TraceError(f"trace records: {name}={int(col.max())} has no name (known: {len(names)}; "
                                 f"ethlink/trace.py and csrc/core.pxd disagree)")
            arrays.append(pa.DictionaryArray.from_arrays(pa.array(col.view(np.int8)), _DICTIONARIES[name],
                                                         safe=False))
        else:
            arrays.append(pa.array(col))
    return pa.RecordBatch.from_arrays(arrays, schema=TRACE_SCHEMA)


# ---------------------------------------------------------------------------------------
# Filters

@dataclass(frozen=True)
class TraceFilter:
    """Rows to keep beyond the engine's level: at these nodes (names), of these flows,
    of these events (names). An empty tuple keeps all."""

    nodes: tuple[str, ...] = ()
    flows: tuple[int, ...] = ()
    events: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.nodes or self.flows or self.events)

    def as_json(self) -> str:
        return json.dumps({"nodes": list(self.nodes), "flows": [int(f) for f in self.flows],
                           "events": list(self.events)})

    def compile(self, node_names: list[str]) -> "_Mask":
        idx = {n: i for i, n in enumerate(node_names)}
        nodes = []
        for n in self.nodes:
            if n not in idx:
                raise ValueError(f"trace filter: no node {n!r}{_did_you_mean(n, node_names)}")
            nodes.append(idx[n])
        events = []
        for e in self.events:
            if e not in EVENT_NAMES:
                raise ValueError(f"trace filter: no event {e!r}; events: {', '.join(EVENT_NAMES)}")
            events.append(EVENT_NAMES.index(e))
        return _Mask(np.array(nodes, dtype=np.int32), np.array(self.flows, dtype=np.int32),
                     np.array(events, dtype=np.uint8))


@dataclass(frozen=True)
class _Mask:
    nodes: np.ndarray
    flows: np.ndarray
    events: np.ndarray

    def apply(self, recs: np.ndarray) -> np.ndarray:
        keep = np.ones(len(recs), dtype=bool)
        for col, vals in (("node", self.nodes), ("flow", self.flows), ("event", self.events)):
            if len(vals):
                keep &= np.isin(recs[col], vals)
        return recs if keep.all() else recs[keep]


def _did_you_mean(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


# ---------------------------------------------------------------------------------------
# Metadata

def simulation_metadata(sim: Any) -> dict[str, str]:
    """The file metadata of a trace of `sim` (an ethlink.Simulation), filters and
    completion aside."""
    from . import __version__
    sc, comp = sim.scenario, sim.compiled
    fab, pt = comp.fabric, comp.port_table
    return {
        "schema_version": SCHEMA_VERSION,
        "scenario": sc.name,
        "scenario_source": json.dumps(sc.source, sort_keys=True, default=str),
        "scenario_format": "json",
        "seed": str(sc.seed),
        "ethlink_version": __version__,
        "trace_level": sim.trace_level,
        "nodes": json.dumps(list(fab.names)),
        "node_kinds": json.dumps(["host" if k == HOST else "switch" for k in fab.kinds]),
        "hosts": json.dumps([int(h) for h in fab.hosts]),
        "ports": json.dumps({"node": pt.node.tolist(), "peer": pt.peer.tolist(),
                             "rate_bps": pt.rate_bps.tolist(), "delay_ps": pt.delay_ps.tolist()}),
        "flows": str(len(comp.flows)),
        "ls_ops": str(len(comp.ls_ops)),
    }


@dataclass
class TraceInfo:
    """A trace's metadata, parsed: what `pcap` and `show` need to rebuild addresses."""

    metadata: dict[str, str]
    nodes: list[str]
    node_kinds: list[str]
    hosts: list[int]
    port_node: np.ndarray
    port_peer: np.ndarray
    port_rate_bps: np.ndarray
    filters: dict = field(default_factory=dict)

    @classmethod
    def of(cls, table_or_schema: pa.Table | pa.Schema, where: str = "trace") -> "TraceInfo":
        schema = table_or_schema if isinstance(table_or_schema, pa.Schema) else table_or_schema.schema
        raw = schema.metadata or {}
        md = {k.decode(): v.decode() for k, v in raw.items()}
        missing = [k for k in REQUIRED_METADATA if k not in md]
        if missing:
            raise TraceError(f"{where}: not an ethlink trace: metadata lacks {', '.join(missing)}")
        try:
            ports = json.loads(md["ports"])
            nodes = json.loads(md["nodes"])
            info = cls(md, nodes, json.loads(md.get("node_kinds", "[]")), json.loads(md.get("hosts", "[]")),
                       np.asarray(ports["node"], dtype=np.int64), np.asarray(ports["peer"], dtype=np.int64),
                       np.asarray(ports.get("rate_bps", []), dtype=np.int64),
                       json.loads(md.get("filters", "{}")))
            info._check(where)
            return info
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise TraceError(f"{where}: corrupted metadata (nodes/ports): {exc}") from None

    def _check(self, where: str) -> None:
        """The metadata's tables agree with each other (every index in range), so that
        readers can index them with the trace's columns once those are checked."""
        n_nodes, n_ports = len(self.nodes), len(self.port_node)
        if not isinstance(self.nodes, list) or not all(isinstance(n, str) for n in self.nodes):
            raise ValueError("nodes is not a list of names")
        hosts = np.asarray(self.hosts, dtype=np.int64)
        for name, idx, hi in (("ports.node", self.port_node, n_nodes), ("ports.peer", self.port_peer, n_ports),
                              ("hosts", hosts, n_nodes)):
            if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= hi)):
                raise ValueError(f"{name} has an index outside 0..{hi - 1}")
        if len(self.port_peer) != n_ports or len(self.node_kinds) not in (0, n_nodes):
            raise ValueError("ports.peer or node_kinds has the wrong length")
        if len(self.port_rate_bps) not in (0, n_ports) or np.any(self.port_rate_bps <= 0):
            raise ValueError("ports.rate_bps has the wrong length or a rate <= 0")
        for key in ("rows", "batches", "flows", "ls_ops"):
            if key in self.metadata and int(self.metadata[key]) < 0:
                raise ValueError(f"{key} is negative")

    @property
    def complete(self) -> bool:
        return self.metadata.get("complete") == "true"

    @property
    def n_ports(self) -> int:
        return len(self.port_node)

    def node_index(self, name: str) -> int:
        try:
            return self.nodes.index(name)
        except ValueError:
            raise ValueError(f"no node {name!r} in this trace{_did_you_mean(name, self.nodes)}") from None

    def node_ports(self, node: int) -> np.ndarray:
        """Port indices of a node, in order (its port i is the i-th)."""
        return np.nonzero(self.port_node == node)[0]

    def port_of(self, node_name: str, index: int) -> int:
        ports = self.node_ports(self.node_index(node_name))
        if not 0 <= index < len(ports):
            raise ValueError(f"node {node_name} has ports 0..{len(ports) - 1}, not {index}")
        return int(ports[index])

    def port_name(self, port: int) -> str:
        """"sw0:3": the node's name and the port's index among the node's ports."""
        n = int(self.port_node[port])
        return f"{self.nodes[n]}:{int(np.searchsorted(self.node_ports(n), port))}"

    def describe_port(self, port: int) -> str:
        """"port 3 (sw0:3 -> h2:0)": a port, its node and the other end of its link."""
        return f"port {int(port)} ({self.port_name(port)} -> {self.port_name(int(self.port_peer[port]))})"


# ---------------------------------------------------------------------------------------
# Writing

def _ipc_options(compression: str | None) -> pa.ipc.IpcWriteOptions:
    c = compression or "none"
    if c not in COMPRESSIONS:
        raise ValueError(f"trace compression {c!r}: choose one of {', '.join(COMPRESSIONS)}")
    return pa.ipc.IpcWriteOptions(compression=None if c == "none" else c, use_threads=False)


class TraceWriter:
    """Streams engine trace records to `path` (an Arrow IPC file, normally OUTDIR/trace.arrow).

        with TraceWriter.for_simulation(sim, out / "trace.arrow") as w:
            sim.run(trace_sink=w.write)

    Leaving the block normally finishes the file with complete=true; leaving it on an
    exception (KeyboardInterrupt included) finishes it with complete=false and the
    exception in `incomplete_reason`. `close(complete, reason)` does the same explicitly.
    A stale `path` from an earlier run is removed when the writer opens.
    """

    def __init__(self, path: str | os.PathLike[str], metadata: Mapping[str, str], *,
                 compression: str | None = DEFAULT_COMPRESSION, trace_filter: TraceFilter | None = None,
                 engine: Any = None, background: bool = True) -> None:
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.compression = compression or "none"
        self.options = _ipc_options(self.compression)
        self.trace_filter = trace_filter or TraceFilter()
        nodes = json.loads(metadata["nodes"]) if "nodes" in metadata else []
        self._mask = self.trace_filter.compile(nodes) if self.trace_filter else None
        self._metadata = dict(metadata)
        self._metadata["filters"] = self.trace_filter.as_json()
        self._engine = engine
        self.rows = 0               # rows written (after filters)
        self.records = 0            # records received (before filters)
        self.batches = 0
        self._batch_rows: list[int] = []
        self._checksum = 0
        self.closed = False
        self._pending: np.ndarray | None = None
        # NOTE: one worker thread converts, compresses and writes a batch while the engine
        # (which runs without the GIL) fills the next; one batch in flight at most.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ethlink-trace") if background else None
        self._inflight: Future | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._sink = pa.OSFile(str(self.partial), "wb")
        try:
            self._sink.write(_FILE_HEAD)
            head = dict(self._metadata, complete="false", incomplete_reason=_RUNNING)
            self._stream = pa.ipc.new_stream(self._sink, TRACE_SCHEMA.with_metadata(head), options=self.options)
        except BaseException:
            self._sink.close()
            raise

    @classmethod
    def for_simulation(cls, sim: Any, path: str | os.PathLike[str], *, compression: str | None = DEFAULT_COMPRESSION,
                       trace_filter: TraceFilter | None = None) -> "TraceWriter":
        """A writer whose metadata describes `sim`; on close it also drains records the
        engine still holds (a run interrupted between two drains)."""
        return cls(path, simulation_metadata(sim), compression=compression, trace_filter=trace_filter,
                   engine=sim.engine)

    def write(self, recs: np.ndarray) -> None:
        """Append a batch of engine trace records (Simulation.run's trace_sink). With
        `background` (the default) the batch is written by the writer's thread; this
        returns once the previous batch is written and this one handed over. `recs` must
        not change afterwards (the engine's `take_trace` gives a fresh copy each time)."""
        if self.closed:
            raise TraceError(f"{self.path}: the trace writer is closed")
        # Kept until handed over: an interrupt before that leaves it for close(); one
        # during it waits for its end, so a batch is written and counted, or neither.
        self._pending = recs
        with _signals_deferred():
            self._settle()
            if self._pool is None:
                self._write(recs)
            else:
                self._inflight = self._pool.submit(self._write, recs)
            self._pending = None

    def flush(self) -> None:
        """Wait until every batch handed to `write` is in the file (in the OS's hands)."""
        with _signals_deferred():
            self._settle()

    def _settle(self) -> None:
        """Wait for the batch in flight; raise what its write raised."""
        fut, self._inflight = self._inflight, None
        if fut is not None:
            fut.result()

    def _write(self, recs: np.ndarray) -> None:
        self.records += len(recs)
        if self._mask is not None:
            recs = self._mask.apply(recs)
        if len(recs) == 0:
            return
        self._stream.write_batch(records_to_batch(recs))
        self.rows += len(recs)
        self.batches += 1
        self._batch_rows.append(len(recs))
        self._checksum = (self._checksum + row_checksum(recs["time_ps"], recs["pkt"])) % 2**64

    def close(self, complete: bool = True, reason: str = "") -> Path:
        """Finish `path` with its final metadata; returns it. Idempotent."""
        if self.closed:
            return self.path
        self.closed = True
        try:
            self._settle()
            if self._pending is not None:
                recs, self._pending = self._pending, None
                self._write(recs)
            if self._engine is not None:
                left = self._engine.take_trace()
                if len(left):
                    self._write(left)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._stream.close()
            self._sink.close()
        md = dict(self._metadata, complete="true" if complete else "false",
                  incomplete_reason="" if complete else (reason or "unknown"),
                  batch_rows=json.dumps(self._batch_rows), checksum=f"{self._checksum:016x}")
        _finish_file(self.partial, self.path, md, self.options)
        return self.path

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close(True)
        else:
            self.close(False, f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__)
        return False


# ---------------------------------------------------------------------------------------
# Finishing the file: the Arrow IPC file format is
#   "ARROW1" + 2 pad bytes, a stream (schema, dictionaries, batches, end-of-stream marker),
#   a footer (a flatbuffer: schema, the blocks where dictionaries and batches are), its
#   int32 length, "ARROW1"
# (https://arrow.apache.org/docs/format/Columnar.html#ipc-file-format). The writer has
# already written everything up to the footer into the .partial, so finishing is
# appending the footer and renaming: O(messages), no batch is read or re-encoded.
# NOTE: pyarrow fixes a file's schema, footer included, when a writer opens, so the
# footer with the final metadata is taken from an empty file pyarrow writes with that
# schema, and its two (empty) block vectors are replaced by the real ones, appended at the
# footer's end (flatbuffer offsets point forward, so nothing else moves). Tests check the
# result against pyarrow's reader; a pyarrow whose footer lacks the vectors is refused.

_FILE_HEAD = b"ARROW1\0\0"
_EOS = b"\xff\xff\xff\xff\0\0\0\0"
_RUNNING = "the run had not finished when this was written (killed, or still running)"
_BLOCK = struct.Struct("<qi4xq")        # File.fbs struct Block {offset; metaDataLength; bodyLength}
_HEADER_SCHEMA, _HEADER_DICTIONARY, _HEADER_BATCH = 1, 2, 3   # Message.fbs union MessageHeader
_MSG_HEADER_TYPE, _MSG_HEADER, _MSG_BODY_LENGTH = 1, 2, 3    # Message table field slots
_FOOTER_DICTIONARIES, _FOOTER_BATCHES = 2, 3                 # Footer table field slots


def _fb_field(buf, table: int, slot: int) -> int | None:
    """Absolute position of a flatbuffer table's field, None when absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    if 4 + 2 * slot >= struct.unpack_from("<H", buf, vtable)[0]:
        return None
    off = struct.unpack_from("<H", buf, vtable + 4 + 2 * slot)[0]
    return table + off if off else None


def _fb_deref(buf, pos: int) -> int:
    return pos + struct.unpack_from("<I", buf, pos)[0]


def _scan_stream(buf, start: int) -> tuple[int, list[tuple], list[tuple], int]:
    """Walk the messages of a stream from `start`: (end of the last whole message,
    dictionary blocks, batch blocks, rows in the batches). Stops at the end-of-stream
    marker or a torn message."""
    pos, dicts, batches, rows, n = start, [], [], 0, len(buf)
    while pos + 8 <= n:
        cont, meta = struct.unpack_from("<Ii", buf, pos)
        if cont != 0xFFFFFFFF or meta <= 0 or pos + 8 + meta > n:
            break
        msg = _fb_deref(buf, pos + 8)
        kind_at, body_at = _fb_field(buf, msg, _MSG_HEADER_TYPE), _fb_field(buf, msg, _MSG_BODY_LENGTH)
        kind = buf[kind_at] if kind_at else 0
        body = struct.unpack_from("<q", buf, body_at)[0] if body_at else 0
        if pos + 8 + meta + body > n:
            break
        if kind == _HEADER_DICTIONARY:
            dicts.append((pos, 8 + meta, body))
        elif kind == _HEADER_BATCH:
            batches.append((pos, 8 + meta, body))
            length_at = _fb_field(buf, _fb_deref(buf, _fb_field(buf, msg, _MSG_HEADER)), 0)
            rows += struct.unpack_from("<q", buf, length_at)[0] if length_at else 0
        pos += 8 + meta + body
    return pos, dicts, batches, rows


def _footer(schema: pa.Schema, options: pa.ipc.IpcWriteOptions, dicts: list[tuple], batches: list[tuple]) -> bytes:
    sink = pa.BufferOutputStream()
    pa.ipc.new_file(sink, schema, options=options).close()
    empty = sink.getvalue().to_pybytes()
    size = struct.unpack_from("<i", empty, len(empty) - 10)[0]
    footer = bytearray(empty[len(empty) - 10 - size: len(empty) - 10])
    root = _fb_deref(footer, 0)
    for slot, blocks in ((_FOOTER_DICTIONARIES, dicts), (_FOOTER_BATCHES, batches)):
        at = _fb_field(footer, root, slot)
        if at is None:
            raise TraceError(f"pyarrow {pa.__version__} writes a footer without block vectors; "
                             "ethlink cannot finish trace files with it")
        footer += bytes(-(len(footer) + 4) % 8)      # the blocks (8-byte aligned) follow a uint32 count
        vec = len(footer)
        footer += struct.pack("<I", len(blocks)) + b"".join(_BLOCK.pack(*b) for b in blocks)
        struct.pack_into("<I", footer, at, vec - at)
    return bytes(footer)


def _finish_file(partial: Path, path: Path, metadata: dict[str, str], options: pa.ipc.IpcWriteOptions) -> None:
    """Turn the .partial (file head + stream) into the Arrow file `path`."""
    with open(partial, "r+b") as f:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            end, dicts, batches, rows = _scan_stream(buf, len(_FILE_HEAD))
        metadata.update(rows=str(rows), batches=str(len(batches)))
        if "batch_rows" in metadata and len(json.loads(metadata["batch_rows"])) != len(batches):
            # a write failed (a full disk) and tore a batch: the counts cannot vouch for the file
            del metadata["batch_rows"], metadata["checksum"]
        footer = _footer(TRACE_SCHEMA.with_metadata(metadata), options, dicts, batches)
        f.truncate(end)                 # drops the end marker (rewritten) or a torn message
        f.seek(end)
        f.write(_EOS + footer + struct.pack("<i", len(footer)) + _FILE_HEAD[:6])
        f.flush()
    try:
        with pa.memory_map(str(partial)) as src:
            n = pa.ipc.open_file(src).num_record_batches
    except pa.ArrowException as exc:
        raise TraceError(f"{partial}: the finished file does not read back ({exc}); "
                         "its batches are still readable as a stream") from None
    if n != len(batches):
        raise TraceError(f"{partial}: the finished file has {n} batches, not {len(batches)}")
    os.replace(partial, path)


_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C), SIGTERM and SIGHUP until the block ends, then deliver them as
    Python would have: to the handler there was, or by the default action (SIGINT:
    KeyboardInterrupt). Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in _DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in dict.fromkeys(got):
            handler = old[s]
            if callable(handler):
                handler(s, None)
            elif handler in (signal.SIG_DFL, None):
                if s == signal.SIGINT:
                    raise KeyboardInterrupt
                signal.raise_signal(s)


# ---------------------------------------------------------------------------------------
# Reading

_FILE_MAGIC = b"ARROW1"


def read_trace(path: str | os.PathLike[str]) -> pa.Table:
    """A trace file as a pyarrow Table (schema metadata included; see `TraceInfo.of`).

    Reads trace.arrow (an Arrow IPC file) or, after a hard kill, trace.arrow.partial (the
    file's head and stream without a footer: every whole batch is returned, a torn last
    one is left out; its metadata says complete=false).
    Raises TraceError naming the file and the problem: missing, empty, not Arrow,
    truncated, corrupted, or not an ethlink trace.
    """
    p = _opened(path)
    # Only TraceError leaves the reader: a damaged file can make pyarrow (or the checks)
    # fail in any way; what failed is named.
    try:
        table = _read_file(p) if _has_footer(p) else _read_stream(p)
        _check(table, p)
    except TraceError:
        raise
    except Exception as exc:            # noqa: BLE001 - anything else is a damaged file
        raise TraceError(f"{p}: corrupted trace file ({type(exc).__name__}: {exc})") from None
    return table


def read_trace_head(path: str | os.PathLike[str], enough: Callable[[pa.Table], bool]) -> tuple[pa.Table, bool]:
    """The first record batches of a trace, read one at a time until `enough(table of
    the batches read so far)` is true or the file ends; returns (that table, whether it
    is the whole trace). For a quick look at the start of a large trace (`ethlink show`):
    the rest of the file is not read.

    The batches read get every check `read_trace` makes (schema, metadata, Arrow's full
    validation, names tables, every index column in range, time never going back). The
    checks of the whole file (row count, each batch's rows and the checksum against the
    metadata, time never going back) are made on its time_ps and pkt columns alone,
    which are all that is decompressed of the batches not read (NOTE: a tenth of the
    file's columns: about 1 s for the 6.5 M-row demo trace, against 10 s for all). The
    other columns of the unread batches are not checked, and not used. A .partial (no
    footer, no counts in its metadata) is read as a stream. Raises TraceError as
    read_trace does."""
    p = _opened(path)
    try:
        batches: list[pa.RecordBatch] = []
        reader = None
        if _has_footer(p):
            reader = pa.ipc.open_file(pa.memory_map(str(p)))
            schema, n = reader.schema, reader.num_record_batches
            nxt = (reader.get_batch(i) for i in range(n))
        else:
            schema, nxt = _stream_batches(p)
        whole = True
        for b in nxt:
            batches.append(b)
            if enough(pa.Table.from_batches(batches, schema=schema)):
                whole = next(nxt, None) is None
                break
        table = pa.Table.from_batches(batches, schema=schema)
        _check(table, p, whole=whole)
        if not whole and reader is not None:
            keys = [schema.get_field_index("time_ps"), schema.get_field_index("pkt")]
            opts = pa.ipc.IpcReadOptions(included_fields=keys)
            rows = pa.ipc.open_file(pa.memory_map(str(p)), options=opts).read_all()
            info = TraceInfo.of(schema, str(p))
            _check_counts(rows, info, p)
            _check_time_order(rows["time_ps"].to_numpy(), p)
    except TraceError:
        raise
    except Exception as exc:            # noqa: BLE001 - anything else is a damaged file
        raise TraceError(f"{p}: corrupted trace file ({type(exc).__name__}: {exc})") from None
    return table, whole


def _opened(path: str | os.PathLike[str]) -> Path:
    """`path` if it can be a trace: it exists, is a file, starts as an Arrow file and has
    its footer (or is a .partial, which has none); else TraceError saying which."""
    p = Path(path)
    if not p.exists():
        hint = ""
        if partial_path(p).exists():
            hint = (f" (found {partial_path(p).name}: the run was killed before it finished its trace; "
                    f"read_trace({str(partial_path(p))!r}) recovers its whole batches)")
        raise TraceError(f"{p}: no such trace file{hint}")
    if p.is_dir():
        cand = p / "trace.arrow"
        raise TraceError(f"{p}: is a directory" + (f"; did you mean {cand}?" if cand.exists() else ""))
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise TraceError(f"{p}: cannot read: {exc.strerror}") from None
    if size == 0:
        raise TraceError(f"{p}: empty file (0 bytes), not an Arrow trace")
    if not head.startswith(_FILE_MAGIC):
        raise TraceError(f"{p}: not an Arrow IPC file (starts with {head.hex()}, not 'ARROW1')")
    if not _has_footer(p) and not p.name.endswith(".partial"):
        raise TraceError(f"{p}: truncated: the Arrow file ends after {size} bytes without its footer "
                         f"(a copy cut short? a run that did not finish leaves {p.name}.partial instead)")
    return p


def _has_footer(p: Path) -> bool:
    size = p.stat().st_size
    with open(p, "rb") as f:
        f.seek(max(0, size - 6))
        return size >= 16 and f.read(6) == _FILE_MAGIC


def _read_file(p: Path) -> pa.Table:
    try:
        with pa.memory_map(str(p)) as src:
            return pa.ipc.open_file(src).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"{p}: corrupted Arrow file: {exc}") from None


def _stream_batches(p: Path) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The schema and the whole batches of the stream after the file head of an
    unfinished file (a .partial)."""
    try:
        buf = pa.memory_map(str(p)).read_buffer()
        reader = pa.ipc.open_stream(buf.slice(len(_FILE_HEAD)))
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"{p}: corrupted Arrow stream (schema unreadable): {exc}") from None

    def batches() -> Iterator[pa.RecordBatch]:
        while True:
            try:
                yield reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowException, OSError):
                # A hard kill tears at most the last message; the batches before it are whole.
                return
    return reader.schema, batches()


def _read_stream(p: Path) -> pa.Table:
    """The stream after the file head of an unfinished file (a .partial)."""
    schema, batches = _stream_batches(p)
    return pa.Table.from_batches(list(batches), schema=schema)


def row_checksum(time_ps: np.ndarray, pkt: np.ndarray) -> int:
    """The trace's `checksum` (metadata) of some rows: the sum, mod 2**64, of
    time_ps x 0x9E3779B97F4A7C15 + pkt over the rows (as unsigned 64-bit integers). Rows
    removed, added or changed in these columns change it; order does not (the monotonic
    time check sees reordering)."""
    with np.errstate(over="ignore"):
        h = np.asarray(time_ps).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.asarray(pkt).astype(np.uint64)
        return int(h.sum(dtype=np.uint64))


def _check(table: pa.Table, p: Path, whole: bool = True) -> None:
    """Structure first (schema, metadata, every buffer and dictionary index: Arrow's full
    validation), then the names tables, then the values against the metadata; nothing
    is read from a column before the step that makes that read safe. `whole`: False for
    the first batches of a file (read_trace_head): the total row count and checksum are
    then not checked."""
    want = [(f.name, f.type) for f in TRACE_SCHEMA]
    got = [(f.name, f.type) for f in table.schema]
    if got != want:
        extra = [n for n, _ in got if n not in dict(want)]
        lack = [n for n, _ in want if n not in dict(got)]
        detail = "; ".join(x for x in (f"lacks {', '.join(lack)}" if lack else "",
                                        f"has unknown {', '.join(extra)}" if extra else "") if x)
        raise TraceError(f"{p}: not an ethlink trace (schema {SCHEMA_VERSION}): "
                         f"{detail or 'column types differ'}")
    info = TraceInfo.of(table, str(p))
    if info.metadata["schema_version"] != SCHEMA_VERSION:
        raise TraceError(f"{p}: trace schema version {info.metadata['schema_version']}, "
                         f"this ethlink reads {SCHEMA_VERSION}")
    try:
        table.validate(full=True)
    except pa.ArrowException as exc:
        raise TraceError(f"{p}: corrupted Arrow data: {exc}") from None
    for name, names in ENUMS.items():
        for chunk in table[name].chunks:
            d = chunk.dictionary.to_pylist()
            if d != list(names)[: len(d)]:
                raise TraceError(f"{p}: column {name} has names {d}, expected a prefix of {list(names)}")
    _check_counts(table, info, p, whole)
    _check_values(table, info, p)


def _check_counts(table: pa.Table, info: TraceInfo, p: Path, whole: bool = True) -> None:
    """A finished file's rows against its metadata: total, per batch, checksum (of the
    first batches, when not `whole`: each batch's rows). Reads time_ps and pkt only."""
    md = info.metadata
    if not whole:
        if "batch_rows" in md:
            want = json.loads(md["batch_rows"])
            got = [len(c) for c in table["time_ps"].chunks if len(c)]
            if got != want[: len(got)]:
                bad = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
                raise TraceError(f"{p}: batch {bad} differs from the metadata's row counts: the file was altered")
        return
    if "rows" in md and int(md["rows"]) != table.num_rows:
        raise TraceError(f"{p}: missing rows: the metadata says {md['rows']} rows, the file has "
                         f"{table.num_rows} (rows were removed or the file was rewritten)")
    if "batch_rows" in md:
        want = json.loads(md["batch_rows"])
        got = [len(c) for c in table["time_ps"].chunks if len(c)]
        if want != got:
            bad = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            raise TraceError(f"{p}: batch {bad} differs from the metadata's row counts "
                             f"({len(got)} batches, metadata {len(want)}): the file was altered")
    if "checksum" in md:
        t = table["time_ps"].to_numpy()
        k = table["pkt"].to_numpy()
        if f"{row_checksum(t, k):016x}" != md["checksum"]:
            raise TraceError(f"{p}: checksum mismatch (time_ps, pkt): rows were altered after the run")


# (column, smallest value, largest value or the metadata count it indexes)
_RANGES = (("time_ps", 0, None), ("pkt", -1, None), ("qbytes", 0, None), ("node", 0, "nodes"),
           ("port", -1, "ports"), ("flow", -1, "flows"), ("src", -1, "nodes"), ("dst", -1, "nodes"),
           ("size", 0, None), ("payload", 0, None), ("qp", -1, None), ("ntx", 0, None),
           ("prio", 0, 8), ("ecn", 0, 4))


def _check_values(table: pa.Table, info: TraceInfo, p: Path) -> None:
    """Every index column within the metadata's tables, no negative count, time never
    going back: the rows callers index arrays with are safe to use."""
    md = info.metadata
    bound = {"nodes": len(info.nodes), "ports": info.n_ports,
             "flows": max(int(md.get("flows", 0)), int(md.get("ls_ops", 0))) if "flows" in md else None}
    for name, lo, hi in _RANGES:
        col = table[name].to_numpy()
        if not len(col):
            return
        top = bound[hi] if isinstance(hi, str) else hi
        bad = (col < lo) | (col >= top) if top is not None else col < lo
        if bad.any():
            r = int(np.argmax(bad))
            allowed = f"{lo}..{top - 1}" if top is not None else f">= {lo}"
            raise TraceError(f"{p}: row {r}: {name}={int(col[r])} is outside {allowed}"
                             f"{' (the metadata ' + hi + ')' if isinstance(hi, str) else ''}: the file is corrupted")
    _check_time_order(table["time_ps"].to_numpy(), p)


def _check_time_order(t: np.ndarray, p: Path) -> None:
    back = np.diff(t) < 0
    if back.any():
        r = int(np.argmax(back)) + 1
        raise TraceError(f"{p}: row {r}: time_ps goes back ({int(t[r])} ps after {int(t[r - 1])} ps); "
                         f"trace rows are in time order: the file is corrupted or was reordered")


def codes(table: pa.Table, column: str) -> np.ndarray:
    """The enum values (engine codes) of a dictionary column as a numpy int8 array."""
    chunks = [c.indices.to_numpy(zero_copy_only=False) for c in table[column].chunks]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int8)
