"""Analysis of a run's trace (and its summary.json): what the fabric did to each message,
to each queue and to each link, as Arrow tables (`.to_pandas()` for pandas).

    from ethlink import analysis as A
    fl = A.flows("out/run/trace.arrow")          # per message: post, first tx, finish, CQE, FCT, slowdown
    A.goodput("out/run/trace.arrow", bins=100)   # delivered payload per time bin
    A.queue_depth("out/run/trace.arrow")         # qbytes per (port, prio) over time
    A.pause_intervals(...), A.pause_time(...)    # PFC pauses per port and priority
    A.latency_percentiles(fl)                    # completion-time percentiles per op
    ops = A.ls_ops("out/run/trace.arrow")        # per Load/Store operation: issue, completion, latency
    A.ls_latency(ops, by="kind")                 # Load/Store latency percentiles per kind (src, or None)

How each quantity follows from the trace (csrc/engine.pyx, roce.pxd, pfc.pxd):

- Delivered payload: raw frames count at every `deliver` (raw has no duplicates); RoCE
  frames count only when the receiver accepts them, which this module replays exactly
  from the `deliver` rows: the responder endpoint (the frame's qp) accepts the PSN it
  expects (a READ REQUEST moves the expectation past the whole READ), the requester
  accepts the READ RESPONSE at its snd_una, and ACK (PSN p: una p+1) / NAK (una p) move
  snd_una. A message is finished when its last payload byte is accepted and complete
  (CQE) when snd_una passes its last PSN (raw: at finish). These equal the engine's
  finish_ps and complete_ps (a test checks them against the run's flows.parquet). UET
  data (reliable unordered) counts at the first untrimmed `deliver` of each (message, PSN);
  UET completions are not replayed: with UET operations `auto` takes message times from
  the run's flows.parquet, and without it (`source="trace"`) they are -1.
- Post time: the op's time_ps, or for an op with a dependency its delay plus the
  dependency's completion. Ideal FCT and slowdown as in ethlink.sim (the op table and
  fabric are rebuilt from the trace metadata: ethlink.replay.workload_from_trace).
- Queue depth: qbytes of the enqueue, tx_start, mark and queue-drop rows (bytes in that
  port's egress queue of that priority after the event). With a `hop` trace that covers
  switches; an `endpoints` trace has host NIC queues only.
- Pauses: a `pause_rx` row with quanta q > 0 at time t pauses the port's egress queue of
  that priority until t + ceil(q * 512 bits / rate) (a later one extends it), quanta 0
  resumes at t; intervals still open at the end are closed at the run's end. Their sums
  equal ports.parquet's paused_ps. `pause_tx` rows count the frames a port sent.
- Load/Store operations: each issued operation has an `op_issue` row when it took a tag
  and an `op_complete` row when it completed (both at the issuing GPU, flag 4 PF_LS, kind
  ethlink with either header profile, flow = operation index, opcode = kind, payload =
  bytes); one never completed (the run ended first) has no `op_complete` row, one never
  issued has no row at all. Latency is complete - issue, as summary.json's `ls` (the
  engine's complete_ps - start_ps); fences issue and complete at once and are left out of
  the latency figures, as there.

Filtered traces (`run --trace-node/--trace-flow/--trace-event`) lack rows these need:
`flows` then takes the per-message times from the run's flows.parquet (beside the given
summary.json, else beside the trace);
`ls_ops` and `ls_latency` need the op_issue and op_complete rows (a TraceError says which
are missing) and see the operations of the GPUs kept.

DuckDB reads the trace straight from Arrow (no copy), e.g. the deepest queues:

    import duckdb
    from ethlink.trace import read_trace
    t = read_trace("out/run/trace.arrow")
    duckdb.sql('''
        SELECT port, prio, max(qbytes) AS max_qbytes, count(*) AS rows
        FROM t WHERE event IN ('enqueue', 'tx_start')
        GROUP BY port, prio ORDER BY max_qbytes DESC LIMIT 5''').df()

(`event`, `kind` and `reason` are dictionary columns: DuckDB sees them as text.)
Or any table of this module: `fl = A.flows(path); duckdb.sql("SELECT op, avg(slowdown)
FROM fl GROUP BY op")`.

Limits: the acceptance replay is a Python loop over RoCE deliver rows (about 1 s per
million rows). A Load/Store operation's scheduled time (before it waited for a tag) is not
in the trace, only when it took its tag.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .scenario import LS_KINDS
from .trace import EVENT_NAMES, FRAME_KINDS, PF_LS, TraceError, TraceInfo, codes, read_trace

__all__ = ["TraceRun", "open_run", "flows", "goodput", "flow_throughput", "queue_depth", "top_queues",
           "pause_intervals", "pause_time", "latency_percentiles", "accepted_rows", "ls_ops", "ls_latency"]

PS = 10**12
QUANTUM_BITS = 512                  # one PFC pause quantum (802.1Qbb 36.1.3.3)
_EV = {n: i for i, n in enumerate(EVENT_NAMES)}
_FK = {n: i for i, n in enumerate(FRAME_KINDS)}
_TRACED_OPS = ("raw", "write", "send", "read", "write_imm", "send_imm")   # receivers replayed here
SYN_NAK_SEQ = 0x60                  # AETH NAK, PSN sequence error (csrc/roce.pxd)
OP_READ_REQUEST, OP_READ_RESP_FIRST, OP_READ_RESP_ONLY = 0x0C, 0x0D, 0x10
LS_FENCE = LS_KINDS.index("fence")  # LS_KINDS: the engine's LsKind names, in enum order


@dataclass
class TraceRun:
    """A trace with what it describes: metadata, the run's op table, the summary (if
    found), the folder of the run's tables (flows.parquet, ...; if known) and the
    compiled fabric (built lazily)."""

    path: str
    table: pa.Table
    info: TraceInfo
    summary: dict | None
    outdir: Path | None = None
    _workload: pa.Table | None = None
    _compiled: Any = None
    _roce: Any = None               # (rows, accepted, una_log) of the RoCE replay

    @property
    def workload(self) -> pa.Table:
        if self._workload is None:
            from .replay import workload_from_trace
            self._workload = workload_from_trace(self.table, check=False)
        return self._workload

    @property
    def scenario(self):
        from .replay import fabric_scenario
        return fabric_scenario(json.loads(self.info.metadata["scenario_source"]))

    @property
    def compiled(self):
        if self._compiled is None:
            from .sim import compile_scenario
            self._compiled = compile_scenario(self.scenario, self.workload)
        return self._compiled

    @property
    def end_ps(self) -> int:
        """The run's end: summary.json's sim_time_ps, else the last trace row."""
        if self.summary and self.summary.get("sim_time_ps") is not None:
            return int(self.summary["sim_time_ps"])
        t = self.table["time_ps"]
        return int(pa.compute.max(t).as_py() or 0) if len(t) else 0

    @property
    def filtered(self) -> bool:
        return any(self.info.filters.get(k) for k in ("nodes", "flows", "events"))

    def result_table(self, name: str) -> pa.Table | None:
        """The run's `flows`, `qps` or `ports` table (OUTDIR/<name>.parquet), or None."""
        if self.outdir is None or not (self.outdir / f"{name}.parquet").exists():
            return None
        from .tables import read_table
        try:
            return read_table(self.outdir, name)
        except (OSError, pa.ArrowInvalid) as exc:
            raise TraceError(f"{self.outdir / name}.parquet: cannot read it: {exc}") from None

    def col(self, name: str) -> np.ndarray:
        if name in ("event", "kind", "reason"):
            return codes(self.table, name)
        return self.table[name].to_numpy()


# What the functions below take: a trace (path, Arrow table or an opened TraceRun) and,
# optionally, its run's summary.json (path or dict; by default the one beside the trace).
TraceLike = str | os.PathLike[str] | pa.Table | TraceRun
SummaryLike = str | os.PathLike[str] | dict | None


def open_run(trace: str | os.PathLike[str] | pa.Table | TraceRun, summary: str | os.PathLike[str] | dict | None = None
             ) -> TraceRun:
    """A TraceRun from a trace path (or a read_trace table). `summary`: a summary.json
    path or dict; by default OUTDIR/summary.json beside OUTDIR/trace.arrow if present. The
    run's tables (flows.parquet, ...) are read from beside the summary.json path given,
    else beside the trace."""
    if isinstance(trace, TraceRun):
        return trace
    outdir = None
    if isinstance(trace, pa.Table):
        table, where = trace, "trace"
    else:
        table, where = read_trace(trace), str(trace)
        outdir = Path(trace).parent
        if summary is None and (Path(trace).parent / "summary.json").exists():
            summary = Path(trace).parent / "summary.json"
    if summary is not None and not isinstance(summary, dict):
        outdir = Path(summary).parent
        try:
            summary = json.loads(Path(summary).read_text())
        except (OSError, ValueError) as exc:
            raise TraceError(f"{summary}: cannot read the summary: {exc}") from None
    return TraceRun(where, table, TraceInfo.of(table, where), summary, outdir)


# ---------------------------------------------------------------------------------------
# What receivers accepted

def accepted_rows(run: TraceRun) -> np.ndarray:
    """Boolean mask of the trace rows whose payload a receiver accepted (raw: every
    data deliver; RoCE: as the transport accepts, see module doc)."""
    ev, kind = run.col("event"), run.col("kind")
    flow, payload = run.col("flow"), run.col("payload")
    acc = (ev == _EV["deliver"]) & (kind == _FK["raw"]) & (flow >= 0)
    rows, ok, _ = _roce_state(run)
    acc[rows[ok]] = True
    # UET (csrc/uet.pxd): the receiver accepts each PSN once, in any order; a trimmed
    # frame carries no payload and a later copy of an accepted PSN is discarded
    uet = np.nonzero((ev == _EV["deliver"]) & (kind == _FK["uet"]) & (flow >= 0) & (payload > 0))[0]
    if len(uet):
        key = flow[uet].astype(np.int64) << 32 | run.col("psn")[uet].astype(np.int64)
        _, first = np.unique(key, return_index=True)
        acc[uet[first]] = True
    acc &= payload > 0
    return acc


def _roce_state(run: TraceRun):
    if run._roce is None:
        ev, kind = run.col("event"), run.col("kind")
        rows = np.nonzero((ev == _EV["deliver"]) & ((kind == _FK["roce"]) | (kind == _FK["roce_ack"])))[0]
        ok, una_log = _roce_replay(run, rows) if len(rows) else (np.zeros(0, dtype=bool), {})
        run._roce = (rows, ok, una_log)
    return run._roce


def _roce_replay(run: TraceRun, rows: np.ndarray):
    """Replay RoCE receive state over the deliver rows `rows` (in row order, which is
    event order): which data rows were accepted, and per requester endpoint the times
    its snd_una rose, as (endpoint -> list of (time, una))."""
    fl = run.compiled.flows
    npkts = fl["npkts"]
    qp, psn, op = run.col("qp")[rows], run.col("psn")[rows], run.col("opcode")[rows]
    kind, flow, syn = run.col("kind")[rows], run.col("flow")[rows], run.col("syndrome")[rows]
    t = run.col("time_ps")[rows]
    addr = run.col("addr")[rows]
    mtu = fl["mtu"]
    ok = np.zeros(len(rows), dtype=bool)
    epsn: dict[int, int] = {}
    una: dict[int, int] = {}
    una_log: dict[int, list[tuple[int, int]]] = {}
    ack_kind = _FK["roce_ack"]
    for i, (q, p, o, k, f) in enumerate(zip(qp.tolist(), psn.tolist(), op.tolist(), kind.tolist(), flow.tolist())):
        if k == ack_kind:
            new = p if syn[i] == SYN_NAK_SEQ else p + 1
            if new > una.get(q, 0):
                una[q] = new
                una_log.setdefault(q, []).append((int(t[i]), new))
        elif OP_READ_RESP_FIRST <= o <= OP_READ_RESP_ONLY:
            if p == una.get(q, 0):
                ok[i] = True
                una[q] = p + 1
                una_log.setdefault(q, []).append((int(t[i]), p + 1))
        elif p == epsn.get(q, 0):
            if o == OP_READ_REQUEST:
                # the request's RETH VA is its byte offset: psn_start = psn - offset / mtu
                epsn[q] = p - int(addr[i]) // int(mtu[f]) + int(npkts[f])
            else:
                ok[i] = True
                epsn[q] = p + 1
    return ok, una_log


# ---------------------------------------------------------------------------------------
# Per message

_FLOW_SCHEMA = pa.schema([
    ("flow", pa.int64()), ("id", pa.int64()), ("src", pa.int32()), ("dst", pa.int32()), ("op", pa.string()),
    ("bytes", pa.int64()), ("prio", pa.int8()), ("dep", pa.int64()),
    ("start_ps", pa.int64()), ("first_tx_ps", pa.int64()), ("finish_ps", pa.int64()),
    ("complete_ps", pa.int64()), ("fct_ps", pa.int64()), ("ideal_fct_ps", pa.int64()), ("slowdown", pa.float64()),
    ("delivered_bytes", pa.int64()), ("tx_frames", pa.int64()),
])


def flows(trace: TraceLike, summary: SummaryLike = None, *, source: str = "auto") -> pa.Table:
    """One row per message (flow index order): its op (id, src, dst, op, bytes, prio,
    dep), post time, first transmission, finish (last payload byte accepted), completion
    (CQE at the requester), FCT (finish - post, as flows.parquet), ideal FCT, slowdown,
    payload bytes accepted and frames transmitted by its sender(s) (retransmissions
    included). Times are null when they did not happen (or, for first_tx_ps and
    tx_frames, when the trace lacks the rows).

    `source`: "trace" derives the times from the trace; "summary" takes them from the
    run's flows.parquet (see open_run); "auto" from the trace unless it is filtered or has
    ops other than raw and RoCE verbs (Load/Store), then from flows.parquet."""
    run = open_run(trace, summary)
    if source not in ("auto", "trace", "summary"):
        raise ValueError(f"source {source!r}: choose auto, trace or summary")
    wl = run.workload
    if source == "auto":
        # the trace replays raw and RoCE receivers only; other ops' times come from the summary
        other = not set(wl["op"].to_pylist()) <= set(_TRACED_OPS)
        source = "summary" if run.filtered or (other and run.result_table("flows") is not None) else "trace"
    n = wl.num_rows
    comp = run.compiled
    ideal = comp.ideal_fct_ps
    ev, kind, flow = run.col("event"), run.col("kind"), run.col("flow")
    t = run.col("time_ps")
    data_kind = (kind == _FK["raw"]) | (kind == _FK["roce"]) | (kind == _FK["uet"])
    host = np.zeros(len(run.info.nodes), dtype=bool)
    host[run.info.hosts] = True
    node = run.col("node")
    first_tx_rows = (ev == _EV["tx_start"]) & data_kind & (flow >= 0) & host[node]
    first_tx = _group_min(flow[first_tx_rows], t[first_tx_rows], n)
    tx_frames = np.bincount(flow[first_tx_rows], minlength=n).astype(np.int64)
    acc = accepted_rows(run)
    delivered = np.bincount(flow[acc], weights=run.col("payload")[acc], minlength=n).astype(np.int64)
    if source == "summary":
        sf = run.result_table("flows")
        if sf is None:
            raise TraceError(f"{run.path}: the trace is filtered ({run.info.filters}); per-message times "
                             f"need the run's flows.parquet (beside the trace, or pass summary=<its summary.json>)")
        if sf.num_rows != n:
            raise TraceError(f"{run.path}: flows.parquet has {sf.num_rows} flows, the trace's run {n}")

        def get(key):
            return np.asarray(sf[key].fill_null(-1).to_numpy(), dtype=np.int64)

        start, finish, complete = get("start_ps"), get("finish_ps"), get("complete_ps")
    else:
        finish, complete = _finish_complete(run, acc, n)
        start = _post_times(wl, complete)
    done = (finish >= 0) & (start >= 0)
    fct = np.where(done, finish - start, -1)
    cols = {
        "flow": np.arange(n), "id": wl["id"], "src": wl["src"], "dst": wl["dst"], "op": wl["op"],
        "bytes": wl["bytes"], "prio": wl["prio"], "dep": wl["dep"],
        "start_ps": _nullable(start), "first_tx_ps": _nullable(first_tx), "finish_ps": _nullable(finish),
        "complete_ps": _nullable(complete), "fct_ps": _nullable(fct), "ideal_fct_ps": ideal,
        "slowdown": pa.array(np.where(done, fct / np.maximum(ideal, 1), np.nan), mask=~done),
        "delivered_bytes": delivered, "tx_frames": _nullable(np.where(tx_frames > 0, tx_frames, -1)),
    }
    return pa.table(cols, schema=_FLOW_SCHEMA)


def _nullable(a: np.ndarray) -> pa.Array:
    a = np.asarray(a, dtype=np.int64)
    return pa.array(a, mask=a < 0)


def _group_min(keys: np.ndarray, vals: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(out, keys, vals)
    return np.where(out == np.iinfo(np.int64).max, -1, out)


def _group_max(keys: np.ndarray, vals: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, -1, dtype=np.int64)
    np.maximum.at(out, keys, vals)
    return out


def _finish_complete(run: TraceRun, acc: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    fl = run.compiled.flows
    flow, t, payload = run.col("flow"), run.col("time_ps"), run.col("payload")
    delivered = np.bincount(flow[acc], weights=payload[acc], minlength=n).astype(np.int64)
    last_acc = _group_max(flow[acc], t[acc], n)
    finish = np.where(delivered >= fl["size"], last_acc, -1)
    complete = np.where(fl["verb"] == 0, finish, -1)
    uet = run.compiled.qps["transport"][fl["qp"]] == 2 if len(fl) else np.zeros(0, dtype=bool)
    complete[uet] = -1                  # UET completions are not replayed (module doc)
    roce = np.nonzero((fl["verb"] >= 1) & (fl["verb"] < len(_TRACED_OPS)) & ~uet)[0]
    if len(roce):
        ev, kind = run.col("event"), run.col("kind")
        _, _, una_log = _roce_state(run)
        # the message's PSN range: its first PSN is the lowest PSN of its packets
        sent = np.nonzero((ev == _EV["tx_start"]) & (kind == _FK["roce"]) & (flow >= 0))[0]
        psn_start = _group_min(flow[sent], run.col("psn")[sent], n)
        end = psn_start + fl["npkts"]
        for f in roce.tolist():
            log = una_log.get(int(fl["qp"][f]))
            if log is None or psn_start[f] < 0:
                continue
            for when, u in log:
                if u >= end[f]:
                    complete[f] = when
                    break
    return finish, complete


def _post_times(wl: pa.Table, complete: np.ndarray) -> np.ndarray:
    """Post time of every op: time_ps, or its delay plus the completion of the op it
    depends on (-1 when that never completed)."""
    t = wl["time_ps"].to_numpy().astype(np.int64)
    ids, dep_id = wl["id"].to_numpy(), wl["dep"].to_numpy()
    has = dep_id >= 0
    if not has.any():
        return t
    order = np.argsort(ids, kind="stable")
    dep = order[np.searchsorted(ids[order], dep_id[has])]
    start = t.copy()
    start[has] = np.where(complete[dep] >= 0, complete[dep] + t[has], -1)
    return start


# ---------------------------------------------------------------------------------------
# Over time

def _bins(run: TraceRun, bins: int | None, bin_ps: int | None) -> tuple[int, int]:
    end = max(run.end_ps, 1)
    if bin_ps is None:
        bin_ps = max(1, -(-end // (bins or 200)))
    return int(bin_ps), int(-(-end // bin_ps))


def goodput(trace: TraceLike, summary: SummaryLike = None, *, bins: int | None = 200, bin_ps: int | None = None) -> pa.Table:
    """Accepted payload per time bin over the whole run: time_ps (bin start), bin_ps,
    bytes, goodput_bps (bytes x 8 / bin time). Sums to summary.json's bytes_delivered."""
    run = open_run(trace, summary)
    width, nb = _bins(run, bins, bin_ps)
    acc = accepted_rows(run)
    b = np.minimum(run.col("time_ps")[acc] // width, nb - 1)
    byts = np.bincount(b, weights=run.col("payload")[acc], minlength=nb).astype(np.int64)
    return pa.table({"time_ps": np.arange(nb, dtype=np.int64) * width, "bin_ps": np.full(nb, width),
                     "bytes": byts, "goodput_bps": byts * 8 * PS / width})


def flow_throughput(trace: TraceLike, summary: SummaryLike = None, *, bins: int | None = 200, bin_ps: int | None = None,
                    flows_: list[int] | None = None) -> pa.Table:
    """Accepted payload per flow and time bin (bins where the flow received something):
    flow, time_ps, bin_ps, bytes, throughput_bps."""
    run = open_run(trace, summary)
    width, nb = _bins(run, bins, bin_ps)
    acc = accepted_rows(run)
    f = run.col("flow")[acc]
    b = np.minimum(run.col("time_ps")[acc] // width, nb - 1)
    p = run.col("payload")[acc]
    if flows_ is not None:
        keep = np.isin(f, flows_)
        f, b, p = f[keep], b[keep], p[keep]
    key = f.astype(np.int64) * nb + b
    uk, inv = np.unique(key, return_inverse=True)
    byts = np.bincount(inv.reshape(-1), weights=p).astype(np.int64)
    return pa.table({"flow": uk // nb, "time_ps": (uk % nb) * width, "bin_ps": np.full(len(uk), width),
                     "bytes": byts, "throughput_bps": byts * 8 * PS / width})


_QUEUE_EVENTS = ("enqueue", "tx_start", "mark", "drop")


def queue_depth(trace: TraceLike, summary: SummaryLike = None, *, ports: list[int] | None = None) -> pa.Table:
    """Egress queue depth samples: time_ps, port, node (name), prio, qbytes (after the
    event), event; from enqueue, tx_start, mark and queue-drop rows, in event order."""
    run = open_run(trace, summary)
    ev, port = run.col("event"), run.col("port")
    m = np.isin(ev, [_EV[e] for e in _QUEUE_EVENTS]) & (port >= 0)
    if ports is not None:
        m &= np.isin(port, ports)
    idx = np.nonzero(m)[0]
    names = np.asarray(run.info.nodes, dtype=object)
    p = port[idx]
    return pa.table({
        "time_ps": run.col("time_ps")[idx], "port": p,
        "node": pa.array(names[run.info.port_node[p]].tolist() if len(p) else [], type=pa.string()),
        "prio": run.col("prio")[idx], "qbytes": run.col("qbytes")[idx],
        "event": pa.array(np.asarray(EVENT_NAMES, dtype=object)[ev[idx]].tolist() if len(idx) else [],
                          type=pa.string()),
    })


def top_queues(trace: TraceLike, summary: SummaryLike = None, *, n: int = 6) -> pa.Table:
    """The `n` (port, prio) queues with the highest traced depth: port, name
    ("sw0:1 -> h1:0"), prio, max_qbytes, samples."""
    run = open_run(trace, summary)
    qd = queue_depth(run)
    if qd.num_rows == 0:
        return pa.table({"port": pa.array([], pa.int32()), "name": pa.array([], pa.string()),
                         "prio": pa.array([], pa.uint8()), "max_qbytes": pa.array([], pa.int64()),
                         "samples": pa.array([], pa.int64())})
    key = qd["port"].to_numpy().astype(np.int64) * 8 + qd["prio"].to_numpy()
    uk, inv = np.unique(key, return_inverse=True)
    inv = inv.reshape(-1)
    mx = np.full(len(uk), -1, dtype=np.int64)
    np.maximum.at(mx, inv, qd["qbytes"].to_numpy())
    cnt = np.bincount(inv)
    order = np.lexsort((uk, -mx))[:n]
    ports = (uk[order] // 8).astype(np.int32)
    return pa.table({"port": ports, "name": [_port_label(run.info, int(p)) for p in ports],
                     "prio": (uk[order] % 8).astype(np.uint8), "max_qbytes": mx[order],
                     "samples": cnt[order].astype(np.int64)})


def _port_label(info: TraceInfo, port: int) -> str:
    return f"{info.port_name(port)} -> {info.port_name(int(info.port_peer[port]))}"


def pause_intervals(trace: TraceLike, summary: SummaryLike = None) -> pa.Table:
    """PFC pause intervals of egress queues: port, node, prio, start_ps, end_ps
    (exclusive), open_at_end (closed at the run's end), from pause_rx rows."""
    run = open_run(trace, summary)
    ev = run.col("event")
    idx = np.nonzero(ev == _EV["pause_rx"])[0]
    end_run = run.end_ps
    rates = run.info.port_rate_bps
    out = {"port": [], "prio": [], "start_ps": [], "end_ps": [], "open_at_end": []}
    state: dict[tuple[int, int], list[int]] = {}          # (port, prio) -> [start, until]
    t, port, prio, quanta = (run.col(c)[idx].tolist() for c in ("time_ps", "port", "prio", "psn"))

    def close(key, at):
        s, _ = state.pop(key)
        out["port"].append(key[0])
        out["prio"].append(key[1])
        out["start_ps"].append(s)
        out["end_ps"].append(at)
        out["open_at_end"].append(False)

    for ti, p, pr, q in zip(t, port, prio, quanta):
        key = (p, pr)
        cur = state.get(key)
        if cur is not None and cur[1] <= ti:       # its timer ran out before this frame
            close(key, cur[1])
            cur = None
        if q == 0:
            if cur is not None:
                close(key, ti)
            continue
        until = ti + -(-q * QUANTUM_BITS * PS // int(rates[p]))
        if cur is None:
            state[key] = [ti, until]
        else:
            cur[1] = until
    for key in sorted(state):
        s, until = state[key]
        open_ = until > end_run
        out["port"].append(key[0])
        out["prio"].append(key[1])
        out["start_ps"].append(s)
        out["end_ps"].append(min(until, end_run))
        out["open_at_end"].append(open_)
    order = np.lexsort((np.asarray(out["start_ps"]), np.asarray(out["prio"]), np.asarray(out["port"])))
    names = np.asarray(run.info.nodes, dtype=object)
    ports = np.asarray(out["port"], dtype=np.int32)[order]
    return pa.table({
        "port": ports, "node": pa.array(names[run.info.port_node[ports]].tolist() if len(ports) else [],
                                        type=pa.string()),
        "prio": np.asarray(out["prio"], dtype=np.uint8)[order],
        "start_ps": np.asarray(out["start_ps"], dtype=np.int64)[order],
        "end_ps": np.asarray(out["end_ps"], dtype=np.int64)[order],
        "open_at_end": np.asarray(out["open_at_end"], dtype=bool)[order],
    })


def pause_time(trace: TraceLike, summary: SummaryLike = None) -> pa.Table:
    """Per port and priority with any PFC activity: port, name, prio, paused_ps (egress
    queue paused, from pause_intervals), pause_frames_rx, pause_frames_tx (the port
    sent them for that priority, XON included), and summary_paused_ps (the run's
    ports.parquet value, null without it)."""
    run = open_run(trace, summary)
    iv = pause_intervals(run)
    ev, port, prio = run.col("event"), run.col("port"), run.col("prio")
    acc: dict[tuple[int, int], list[int]] = {}
    for p, pr, s, e in zip(*(iv[c].to_numpy().tolist() for c in ("port", "prio", "start_ps", "end_ps"))):
        acc.setdefault((p, pr), [0, 0, 0])[0] += e - s
    for name, slot in (("pause_rx", 1), ("pause_tx", 2)):
        m = ev == _EV[name]
        if not m.any():
            continue
        pairs, counts = np.unique(np.stack([port[m], prio[m]], axis=1), axis=0, return_counts=True)
        for (p, pr), c in zip(pairs.tolist(), counts.tolist()):
            acc.setdefault((p, pr), [0, 0, 0])[slot] += c
    keys = sorted(acc)
    summ = {}
    ports = run.result_table("ports")
    if ports is not None and "paused_ps" in ports.column_names:
        summ = dict(zip(ports["port"].to_pylist(), ports["paused_ps"].to_pylist()))
    sp = [summ[p][pr] if p in summ and summ[p] is not None else None for p, pr in keys]
    return pa.table({
        "port": pa.array([k[0] for k in keys], pa.int32()),
        "name": pa.array([_port_label(run.info, k[0]) for k in keys], pa.string()),
        "prio": pa.array([k[1] for k in keys], pa.uint8()),
        "paused_ps": pa.array([acc[k][0] for k in keys], pa.int64()),
        "pause_frames_rx": pa.array([acc[k][1] for k in keys], pa.int64()),
        "pause_frames_tx": pa.array([acc[k][2] for k in keys], pa.int64()),
        "summary_paused_ps": pa.array(sp, pa.int64()),
    })


def latency_percentiles(flows_table: pa.Table | Any, *, by: str = "op",
                        percentiles: tuple[float, ...] = (50, 90, 99, 99.9)) -> pa.Table:
    """Completion-latency percentiles (ps) of the messages that completed, per `by`
    (op, or prio, src, dst): count, then p50, p90, p99, p99.9 (linear interpolation), max
    of complete_ps - start_ps. `flows_table`: flows(...) or a trace (then flows(trace)).
    Load/Store operations: ls_latency."""
    fl = flows_table if isinstance(flows_table, pa.Table) and "complete_ps" in flows_table.column_names \
        else flows(flows_table)
    c, s = fl["complete_ps"].to_numpy(zero_copy_only=False), fl["start_ps"].to_numpy(zero_copy_only=False)
    ok = ~(np.isnan(c.astype(float)) | np.isnan(s.astype(float)))
    lat = (c[ok] - s[ok]).astype(np.int64)
    keys = np.asarray(fl[by].to_pylist(), dtype=object)[ok]
    groups = sorted(set(keys.tolist()))
    out: dict[str, list] = {by: groups, "count": []}
    names = [f"p{p:g}".replace(".", "_") + "_ps" for p in percentiles]
    for nm in names + ["max_ps"]:
        out[nm] = []
    for g in groups:
        x = lat[keys == g]
        out["count"].append(len(x))
        for nm, p in zip(names, percentiles):
            out[nm].append(float(np.percentile(x, p)))
        out["max_ps"].append(int(x.max()))
    return pa.table(out)


# ---------------------------------------------------------------------------------------
# Load/Store operations

_LS_SCHEMA = pa.schema([
    ("op", pa.int64()), ("src", pa.string()), ("dst", pa.string()), ("src_index", pa.int32()),
    ("dst_index", pa.int32()), ("kind", pa.string()), ("bytes", pa.int64()),
    ("issue_ps", pa.int64()), ("complete_ps", pa.int64()), ("latency_ps", pa.int64()), ("prio", pa.uint8()),
])
_LS_EVENTS = ("op_issue", "op_complete")


def ls_ops(trace: TraceLike, summary: SummaryLike = None) -> pa.Table:
    """One row per Load/Store operation in the trace (operation index order): op (its
    index in the engine's LsOp table, the rows' `flow`), src and dst (host names, from the
    metadata `nodes` and `hosts`; fence: src == dst), src_index and dst_index (host
    indices), kind (ethlink.scenario.LS_KINDS: load, store, store_ack, fadd, cas, fence),
    bytes (the rows' payload; atomics 8, fence 0), issue_ps (its op_issue row: when it
    took a tag, the engine's start_ps), complete_ps (its op_complete row; for a posted
    store, when the engine counts it complete), latency_ps (complete_ps - issue_ps, as
    summary.json's `ls`; these two are null for an operation that did not complete: the
    run ended first) and prio (its traffic class, scenario `ls.prio`). Operations never
    issued are not in the trace, so not here.

    Vectorised over the op rows (event op_issue/op_complete with flag PF_LS). A trace
    filtered by node or flow has the operations of those issuing hosts or indices only;
    one filtered by event must keep both op_issue and op_complete (else TraceError)."""
    run = open_run(trace, summary)
    kept = run.info.filters.get("events") or []
    missing = [e for e in _LS_EVENTS if kept and e not in kept]
    if missing:
        raise TraceError(f"{run.path}: the trace has no {' or '.join(missing)} rows, which Load/Store "
                         f"latency needs: it was filtered to events {', '.join(kept)} (keep op_issue and "
                         f"op_complete; summary.json's `ls` has the engine's own figures)")
    ev = run.col("event")
    rows = np.nonzero((ev == _EV["op_issue"]) | (ev == _EV["op_complete"]))[0]
    rows = rows[(_take(run, "flags", rows) & PF_LS) != 0]     # Load/Store, not message, op rows
    if len(rows) == 0 and run.filtered:
        raise TraceError(f"{run.path}: no Load/Store op_issue/op_complete rows in this trace: it is "
                         f"filtered ({run.info.filters}); keep the issuing GPUs' nodes and the "
                         f"op_issue and op_complete events")
    issue_row = ev[rows] == _EV["op_issue"]
    op = _take(run, "flow", rows).astype(np.int64)
    t = _take(run, "time_ps", rows)
    # operation indices are dense (the engine's LsOp table): group by direct indexing
    size = int(op.max()) + 1 if len(op) else 0
    if len(op) and op.min() < 0:
        raise TraceError(f"{run.path}: Load/Store op rows with a negative operation index")
    uops = np.nonzero(np.bincount(op, minlength=size))[0]
    issue = _group_min(op[issue_row], t[issue_row], size)[uops]
    complete = _group_min(op[~issue_row], t[~issue_row], size)[uops]
    n = len(uops)
    at = rows[_group_min(op, np.arange(len(op)), size)[uops]]    # each operation's first row
    src, dst, kind = (_take(run, c, at) for c in ("src", "dst", "opcode"))
    hosts = np.asarray(run.info.nodes, dtype=object)[np.asarray(run.info.hosts, dtype=np.int64)] \
        if run.info.hosts else np.zeros(0, dtype=object)
    for name, a, limit in (("src", src, len(hosts)), ("dst", dst, len(hosts)), ("opcode", kind, len(LS_KINDS))):
        if n and (a.min() < 0 or a.max() >= limit):
            raise TraceError(f"{run.path}: Load/Store op rows with {name} {int(a.max())} out of range "
                             f"(0..{limit - 1})")
    done = (issue >= 0) & (complete >= 0)
    host_names = pa.array(hosts.tolist(), pa.string())
    return pa.table({
        "op": uops, "src": _names(src, host_names), "dst": _names(dst, host_names),
        "src_index": src.astype(np.int32), "dst_index": dst.astype(np.int32),
        "kind": _names(kind, pa.array(LS_KINDS, pa.string())),
        "bytes": _take(run, "payload", at).astype(np.int64),
        "issue_ps": _nullable(issue), "complete_ps": _nullable(complete),
        "latency_ps": _nullable(np.where(done, complete - issue, -1)),
        "prio": _take(run, "prio", at),
    }, schema=_LS_SCHEMA)


def _take(run: TraceRun, name: str, rows: np.ndarray) -> np.ndarray:
    """Column `name` at `rows` (taken in Arrow: the rest of the column is not converted)."""
    return run.table[name].take(pa.array(rows, pa.int64())).to_numpy()


def _names(codes_: np.ndarray, names: pa.Array) -> pa.Array:
    """Names of integer codes as a plain string array (decoded in Arrow, no Python
    object per row)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes_.astype(np.int32)), names).dictionary_decode()


def ls_latency(trace: TraceLike, summary: SummaryLike = None, *, by: str | None = "kind",
               percentiles: tuple[float, ...] = (50, 90, 99, 99.9)) -> pa.Table:
    """Load/Store latency (ps) per group: issued (operations), completed, mean_ps,
    the percentiles (p50_ps, p90_ps, p99_ps, p99_9_ps by default), min_ps and max_ps of
    latency_ps over the completed ones; fences left out, as in summary.json's `ls`.
    `trace`: a trace (path, table or TraceRun) or an ls_ops(...) table.

    `by`: "kind" (one row per kind issued, in LS_KINDS order), "src" (per issuing GPU,
    host index order) or "dst" (per target GPU), each followed by an "all" row; None: the
    "all" row alone, without a group column. Percentiles are numpy's with method="lower"
    (the lower value at a rank: an actual latency), the mean that of the latencies in
    operation order: the figures equal summary.json's where both exist, i.e. its `ls`
    count, issued, p50_ps, p99_ps, p999_ps, mean_ps, min_ps, max_ps are the "all" row's
    completed, issued, p50_ps, p99_ps, p99_9_ps, mean_ps, min_ps, max_ps, and by_kind[k]'s
    count, p50_ps, p99_ps, max_ps those of row k (for a complete, unfiltered trace).
    Statistics of a group with nothing completed are null."""
    if by not in ("kind", "src", "dst", None):
        raise ValueError(f"by {by!r}: choose kind, src, dst or None")
    ops = trace if isinstance(trace, pa.Table) and "latency_ps" in trace.column_names else ls_ops(trace, summary)
    kind = _kind_codes(ops["kind"])
    real = kind != LS_FENCE
    lat = ops["latency_ps"].fill_null(-1).to_numpy()[real]      # -1: not completed
    rows: list[tuple[str, np.ndarray]] = []
    if by is not None:
        if by == "kind":
            key, label = kind[real], np.asarray(LS_KINDS, dtype=object)
        else:
            key = ops[f"{by}_index"].to_numpy().astype(np.int64)[real]
            label = np.zeros(int(key.max()) + 1 if len(key) else 0, dtype=object)
            label[key] = ops[by].filter(pa.array(real)).to_numpy(zero_copy_only=False)
        order = np.argsort(key, kind="stable")      # stable: operation order within a group
        groups, starts = np.unique(key[order], return_index=True)
        bounds = np.r_[starts, len(key)]
        for g, lo, hi in zip(groups.tolist(), bounds[:-1].tolist(), bounds[1:].tolist()):
            rows.append((label[g], lat[order[lo:hi]]))
    rows.append(("all", lat))
    pnames = [f"p{p:g}".replace(".", "_") + "_ps" for p in percentiles]
    out: dict[str, list] = {"issued": [], "completed": [], "mean_ps": []}
    for nm in pnames + ["min_ps", "max_ps"]:
        out[nm] = []
    for _, x in rows:
        done = x[x >= 0]
        out["issued"].append(len(x))
        out["completed"].append(len(done))
        out["mean_ps"].append(float(done.mean()) if len(done) else None)
        for nm, p in zip(pnames, percentiles):
            out[nm].append(int(np.percentile(done, p, method="lower")) if len(done) else None)
        out["min_ps"].append(int(done.min()) if len(done) else None)
        out["max_ps"].append(int(done.max()) if len(done) else None)
    cols: dict[str, pa.Array] = {}
    if by is not None:
        cols[by] = pa.array([r[0] for r in rows], pa.string())
    cols["issued"] = pa.array(out["issued"], pa.int64())
    cols["completed"] = pa.array(out["completed"], pa.int64())
    cols["mean_ps"] = pa.array(out["mean_ps"], pa.float64())
    for nm in pnames + ["min_ps", "max_ps"]:
        cols[nm] = pa.array(out[nm], pa.int64())
    return pa.table(cols)


def _kind_codes(kind: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """LsKind code (index in LS_KINDS) of each kind name, looked up per distinct name."""
    enc = pa.chunked_array(kind).combine_chunks().dictionary_encode() if len(kind) else None
    if enc is None:
        return np.zeros(0, dtype=np.int64)
    pos = {nm: i for i, nm in enumerate(LS_KINDS)}
    bad = [nm for nm in enc.dictionary.to_pylist() if nm not in pos]
    if bad:
        raise ValueError(f"Load/Store kinds {bad}: not among {', '.join(LS_KINDS)}")
    lut = np.asarray([pos[nm] for nm in enc.dictionary.to_pylist()], dtype=np.int64)
    return lut[enc.indices.to_numpy(zero_copy_only=False)]
