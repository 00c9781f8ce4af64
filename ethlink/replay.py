"""Trace replay: workload tables (operations in time, with dependencies) as a run's input,
and the operations an earlier run posted, extracted from its trace.

A workload table has one row per operation (`WORKLOAD_SCHEMA`):

| column  | type   | meaning |
| ------- | ------ | ------- |
| id      | int64  | unique operation id (any values); `dep` refers to it |
| time_ps | int64  | ps; post time, or for an op with a `dep`, the delay after that op completes |
| src     | int32  | requester host index |
| dst     | int32  | responder host index (!= src) |
| op      | string | raw, write, send, read, write_imm, send_imm (`ethlink.scenario.VERBS`); uet_write (a UET message); Load/Store: load, store, store_ack, fadd, cas, fence (`LS_KINDS`) |
| bytes   | int64  | payload bytes, >= 1 |
| prio    | int8   | 802.1Q priority 0..7 |
| qp      | int64  | ops with the same (src, dst, qp >= 0) share one queue pair, in posting order; -1: own QP |
| dep     | int64  | id of the op whose completion (CQE) this one waits for; -1: none |

`load_workload(path)` reads such a table from an Arrow IPC file or stream, Parquet or CSV
(or extracts it from an ethlink trace), checks its columns and types and returns it as a
pyarrow Table in `WORKLOAD_SCHEMA` (qp and dep filled with -1 when absent or empty); row
checks against a fabric (hosts in range, dependency cycles) are done by
`ethlink.Simulation(scenario, workload=table)`. `write_workload` writes one by suffix.

`workload_from_trace(trace)` returns the operations a traced run posted, exactly, so that
replaying them on the same fabric and seed gives the same trace:

- a trace written by `replay_run` (ethlink replay) carries its workload table in the file
  metadata (`workload`: a zstd-compressed Arrow IPC stream, base64) whenever that table is
  not the fabric scenario's own traffic;
- any other trace is rebuilt from its `scenario_source` (the scenario's flows and
  workloads expand to one op per flow, in flow order, posted at their start time), and
  checked against the trace's packets: each traced flow's endpoints and priority must
  match its op and its first transmission must not precede the op's post time.

So a replay of an extracted workload on the same fabric writes exactly the file `ethlink
run` wrote (no `workload` key: the workload is the scenario's own), byte for byte.

Limits: extraction rebuilds the table from the metadata (`workload` or
`scenario_source`); the trace's op_issue/op_complete rows are used as a check, not as the
source, so a trace whose metadata lacks both cannot be turned into a workload. The ops of
an interrupted run are all the ops it had, posted or not. Load/Store operations (load,
store, store_ack, fadd, cas, fence; `atomic` means fadd) go to the GPUs' Load/Store
engines: they issue in table order per GPU at time_ps and cannot carry a dependency;
the fabric scenario's own [[loadstore]] streams stay part of the fabric and are not
extracted into the table.
"""
from __future__ import annotations

import base64
import copy
import dataclasses
import difflib
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .fileio import replacing
from .scenario import LS_KINDS, VERBS, Scenario, ScenarioError, apply_override
from .trace import TRACE_SCHEMA, TraceError, read_trace
from .workloads import TRANSPORT_CODES, UET_OP

if TYPE_CHECKING:
    from .sim import Simulation

__all__ = ["WORKLOAD_SCHEMA", "REQUIRED", "OPTIONAL", "LOADSTORE_OPS", "as_workload", "load_workload",
           "write_workload", "scenario_workload", "workload_from_trace", "load_fabric",
           "workload_metadata", "same_workload"]

WORKLOAD_VERSION = "1"
REQUIRED = ("id", "time_ps", "src", "dst", "op", "bytes", "prio")
OPTIONAL = ("qp", "dep")
LOADSTORE_OPS = LS_KINDS + ("atomic",)        # "atomic" means fadd
OPS = VERBS + (UET_OP,) + LS_KINDS
_UNITS = {"id": "op id", "time_ps": "ps", "src": "host index", "dst": "host index", "op": "VERBS",
          "bytes": "bytes", "prio": "802.1Q PCP", "qp": "queue-pair key, -1 own", "dep": "op id, -1 none"}
_TYPES = {"id": pa.int64(), "time_ps": pa.int64(), "src": pa.int32(), "dst": pa.int32(), "op": pa.string(),
          "bytes": pa.int64(), "prio": pa.int8(), "qp": pa.int64(), "dep": pa.int64()}
WORKLOAD_SCHEMA = pa.schema([pa.field(n, _TYPES[n], nullable=False, metadata={"unit": _UNITS[n]})
                             for n in REQUIRED + OPTIONAL], metadata={"ethlink_workload": WORKLOAD_VERSION})


# ---------------------------------------------------------------------------------------
# Normalising a table

def as_workload(data: Any, where: str = "workload", generator: str | None = None) -> pa.Table:
    """A workload table in WORKLOAD_SCHEMA from a pyarrow Table, a RecordBatch, a pandas
    DataFrame or a mapping of equal-length arrays. Raises ScenarioError naming `where`,
    the column, the row and what is allowed. Extra columns are refused (a misspelt
    optional column would otherwise be silently ignored)."""
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if not isinstance(data, pa.Table):
        if hasattr(data, "to_dict") and hasattr(data, "columns"):          # pandas
            data = pa.Table.from_pandas(data, preserve_index=False)
        elif isinstance(data, Mapping):
            try:
                data = pa.table({k: _to_arrow(v) for k, v in data.items()})
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                raise ScenarioError(f"{where}: cannot make a table of these columns: {exc}") from None
        else:
            raise ScenarioError(f"{where}: expected a table (pyarrow, pandas or a mapping of arrays), "
                                f"got {type(data).__name__}")
    if generator is None and data.schema.metadata and b"generator" in data.schema.metadata:
        generator = data.schema.metadata[b"generator"].decode()
    names = data.column_names
    extra = [c for c in names if c not in REQUIRED + OPTIONAL]
    missing = [c for c in REQUIRED if c not in names]
    if missing or extra:
        parts = []
        for c in missing:
            close = difflib.get_close_matches(c, extra, n=1, cutoff=0.7)
            parts.append(f"lacks column {c!r}" + (f" (found {close[0]!r}: rename it)" if close else ""))
        for c in extra:
            if not any(c in difflib.get_close_matches(m, extra, n=1, cutoff=0.7) for m in missing):
                close = difflib.get_close_matches(c, REQUIRED + OPTIONAL, n=1)
                parts.append(f"has unknown column {c!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ScenarioError(f"{where}: " + "; ".join(parts) +
                            f". Columns: {', '.join(REQUIRED)} (required), {', '.join(OPTIONAL)} (optional)")
    n = data.num_rows
    arrays = []
    for name in REQUIRED + OPTIONAL:
        if name not in names:
            arrays.append(pa.array(np.full(n, -1, dtype=np.int64)))
            continue
        col = data.column(name).combine_chunks() if data.column(name).num_chunks != 1 else data.column(name).chunk(0)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if name == "op":
            arrays.append(_ops(col, where))
        else:
            arrays.append(_ints(col, name, where, fill=-1 if name in OPTIONAL else None))
    md = dict(WORKLOAD_SCHEMA.metadata)
    if generator:
        md[b"generator"] = generator.encode()
    return pa.Table.from_arrays(arrays, schema=WORKLOAD_SCHEMA.with_metadata(md))


def _to_arrow(v) -> pa.Array:
    if isinstance(v, (pa.Array, pa.ChunkedArray)):
        return v
    a = np.asarray(v)
    if a.dtype.kind in "OU":
        return pa.array(a.tolist())
    return pa.array(a)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.nonzero(mask)[0][0])


def _ints(col: pa.Array, name: str, where: str, fill: int | None) -> pa.Array:
    typ = _TYPES[name]
    if col.null_count:
        if fill is None:
            r = _first_bad(np.asarray(col.is_null()))
            raise ScenarioError(f"{where}: column {name} row {r} is empty; every op needs a {name}")
        col = col.fill_null(fill)
    t = col.type
    if pa.types.is_integer(t):
        vals = col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False) if not pa.types.is_uint64(t) \
            else col.to_numpy(zero_copy_only=False)
    elif pa.types.is_floating(t):
        f = col.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(f) | (f != np.round(f)) | (np.abs(f) >= 2.0**63)
        if bad.any():
            r = _first_bad(bad)
            raise ScenarioError(f"{where}: column {name} row {r} is {f[r]!r}, not a whole number "
                                f"({_UNITS[name]})")
        vals = f.astype(np.int64)
    elif pa.types.is_boolean(t):
        raise ScenarioError(f"{where}: column {name} must be integers ({_UNITS[name]}), got booleans")
    else:
        sample = col[0].as_py() if len(col) else None
        raise ScenarioError(f"{where}: column {name} must be integers ({_UNITS[name]}), got {t} "
                            f"(row 0: {sample!r}); write plain numbers, e.g. time_ps in picoseconds")
    info = np.iinfo(typ.to_pandas_dtype())
    out = (vals < info.min) | (vals > info.max)
    if out.any():
        r = _first_bad(out)
        raise ScenarioError(f"{where}: column {name} row {r} is {int(vals[r])}, out of range for {typ}")
    return pa.array(vals.astype(typ.to_pandas_dtype()), type=typ)


def _ops(col: pa.Array, where: str) -> pa.Array:
    t = col.type
    if pa.types.is_integer(t):
        if col.null_count:
            raise ScenarioError(f"{where}: column op row {_first_bad(np.asarray(col.is_null()))} is empty")
        v = col.to_numpy(zero_copy_only=False).astype(np.int64)
        bad = (v < 0) | (v >= len(VERBS))
        if bad.any():
            r = _first_bad(bad)
            raise ScenarioError(f"{where}: column op row {r} is {int(v[r])}; as numbers ops are "
                                f"0..{len(VERBS) - 1} ({', '.join(VERBS)})")
        return pa.array(np.asarray(VERBS, dtype=object)[v].tolist(), type=pa.string())
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise ScenarioError(f"{where}: column op must be strings ({', '.join(VERBS)}), got {t}")
    vals = [None if x is None else x.strip().lower() for x in col.to_pylist()]
    for r, x in enumerate(vals):
        if x in VERBS or x in LOADSTORE_OPS or x == UET_OP:
            continue
        if x is None or x == "":
            raise ScenarioError(f"{where}: column op row {r} is empty; ops: {', '.join(OPS)}")
        close = difflib.get_close_matches(x, OPS, n=1)
        raise ScenarioError(f"{where}: column op row {r} is {x!r}, not one of {', '.join(OPS)}"
                            + (f" (did you mean {close[0]!r}?)" if close else ""))
    return pa.array(vals, type=pa.string())


# ---------------------------------------------------------------------------------------
# Files

_PARQUET_MAGIC, _ARROW_MAGIC, _STREAM_MAGIC = b"PAR1", b"ARROW1", b"\xff\xff\xff\xff"


def load_workload(path: str | os.PathLike[str]) -> pa.Table:
    """Read a workload table (Arrow IPC file or stream, Parquet, CSV; by content, not by
    name) or extract one from an ethlink trace file. Raises TraceError for a file that
    cannot be read as a table and ScenarioError for a table that is not a workload."""
    p = Path(path)
    if not p.exists():
        raise TraceError(f"{p}: no such workload file")
    if p.is_dir():
        raise TraceError(f"{p}: is a directory, not a workload file")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise TraceError(f"{p}: cannot read: {exc.strerror}") from None
    if not head:
        raise TraceError(f"{p}: empty file (0 bytes), not a workload table")
    # Only TraceError and ScenarioError leave: a damaged file can fail anywhere in pyarrow.
    try:
        return _load_table(p, head)
    except (TraceError, ScenarioError):
        raise
    except Exception as exc:            # noqa: BLE001 - anything else is a damaged file
        raise TraceError(f"{p}: not a readable workload table ({type(exc).__name__}: {exc})") from None


def _load_table(p: Path, head: bytes) -> pa.Table:
    if head.startswith(_ARROW_MAGIC):
        table = _read_arrow_file(p)
        if _is_trace(table.schema):
            return workload_from_trace(p)
    elif head.startswith(_STREAM_MAGIC):
        table = _read_arrow_stream(p)
    elif head.startswith(_PARQUET_MAGIC):
        table = _read_parquet(p)
    elif p.suffix.lower() in (".arrow", ".feather", ".ipc", ".arrows", ".parquet", ".pq"):
        raise TraceError(f"{p}: not an Arrow or Parquet file (starts with {head.hex()})")
    else:
        table = _read_csv(p)
    try:
        table.validate(full=True)       # before any value is read: a damaged buffer can crash a read
    except pa.ArrowException as exc:
        raise TraceError(f"{p}: corrupted table data: {exc}") from None
    return as_workload(table, str(p))


def _is_trace(schema: pa.Schema) -> bool:
    """An ethlink trace (perhaps a damaged one, which read_trace then names): its
    metadata or most of its columns are a trace's."""
    md = schema.metadata or {}
    return (b"schema_version" in md and b"nodes" in md) or \
        len(set(schema.names) & set(TRACE_SCHEMA.names)) > len(TRACE_SCHEMA.names) // 2


def _read_arrow_file(p: Path) -> pa.Table:
    try:
        with pa.memory_map(str(p)) as src:
            return pa.ipc.open_file(src).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"{p}: corrupted or truncated Arrow file: {exc}") from None


def _read_arrow_stream(p: Path) -> pa.Table:
    try:
        with pa.memory_map(str(p)) as src:
            return pa.ipc.open_stream(src).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"{p}: corrupted or truncated Arrow stream: {exc}") from None


def _read_parquet(p: Path) -> pa.Table:
    import pyarrow.parquet as pq
    try:
        return pq.read_table(str(p))
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"{p}: corrupted or truncated Parquet file: {exc}") from None


def _read_csv(p: Path) -> pa.Table:
    import pyarrow.csv as pcsv
    # op is text; every other column is read as Arrow infers it and checked in as_workload.
    opts = pcsv.ConvertOptions(column_types={"op": pa.string()}, strings_can_be_null=True)
    try:
        return pcsv.read_csv(str(p), convert_options=opts)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{p}: not a readable CSV workload: {exc}") from None


def write_workload(table: Any, path: str | os.PathLike[str]) -> Path:
    """Write a workload table; the format follows the suffix: .arrow (IPC file, zstd),
    .parquet, .csv. The file appears whole or not at all (ethlink.fileio.replacing)."""
    t = as_workload(table)
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".arrow", ".feather", ".ipc", ".parquet", ".pq", ".csv"):
        raise ValueError(f"{p}: choose a workload format by suffix: .arrow, .parquet or .csv")
    p.parent.mkdir(parents=True, exist_ok=True)
    with replacing(p) as tmp:
        if suffix in (".arrow", ".feather", ".ipc"):
            with pa.OSFile(str(tmp), "wb") as sink, \
                    pa.ipc.new_file(sink, t.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
                w.write_table(t)
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq
            pq.write_table(t, str(tmp), compression="zstd")
        else:
            import pyarrow.csv as pcsv
            sink = pa.BufferOutputStream()
            pcsv.write_csv(t, sink, pcsv.WriteOptions(include_header=False, quoting_style="none"))
            tmp.write_bytes((",".join(t.column_names) + "\n").encode() + sink.getvalue().to_pybytes())
    return p


# ---------------------------------------------------------------------------------------
# Fabrics: a scenario whose traffic is replaced

_PLACEHOLDER_FLOW = {"src": 0, "dst": 1, "size": 1}


def load_fabric(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """A scenario used as the fabric of a replay: a built-in name or a TOML path, with
    `--set` overrides. Unlike Scenario.from_toml it may have no [[flow]] or [[workload]]
    (the workload table brings the traffic); its own traffic, if any, is not run."""
    from . import scenarios

    p = Path(name_or_path)
    if not (p.suffix == ".toml" or p.exists()):
        p = scenarios.path(name_or_path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: not valid TOML: {exc}") from None
    return fabric_scenario(data, overrides)


def fabric_scenario(data: dict, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Scenario.from_dict, allowing a scenario without traffic; traffic that does not
    validate (it is replaced by the workload) is left out of the fabric and its source."""
    data = copy.deepcopy(data)
    for item in overrides:
        apply_override(data, item)
    if data.get("flow") or data.get("workload"):
        try:
            return Scenario.from_dict(data)
        except ScenarioError as exc:
            if not str(exc).startswith(("flow[", "workload[")):
                raise
            # its own traffic does not fit (say, after --set topology.hosts=4): it is
            # not run anyway, so the fabric is taken without it
            data = {k: v for k, v in data.items() if k not in ("flow", "workload")}
    # NOTE: scenario validation insists on traffic; a fabric-only scenario is validated
    # with a one-byte placeholder flow, which is then removed (flows and source), so
    # nothing of it reaches the run or the trace metadata.
    sc = Scenario.from_dict({**data, "flow": [_PLACEHOLDER_FLOW]})
    return dataclasses.replace(sc, flows=(), source=data)


# ---------------------------------------------------------------------------------------
# Workloads of runs

def scenario_workload(sc: Scenario) -> pa.Table:
    """The scenario's own traffic as a workload table: one op per flow, in flow order
    (ids 0..n-1), posted at its start time, each on its own QP, without dependencies."""
    from .workloads import expand

    cols = expand(sc)
    n = len(cols["src"])
    return as_workload({
        "id": np.arange(n, dtype=np.int64), "time_ps": cols["start_ps"], "src": cols["src"],
        "dst": cols["dst"], "op": np.where(cols["transport"] == TRANSPORT_CODES["uet"], UET_OP,
                                           np.asarray(VERBS, dtype=object)[cols["verb"]]).tolist() if n else
        pa.array([], type=pa.string()),
        "bytes": cols["size"], "prio": cols["prio"], "qp": np.full(n, -1, dtype=np.int64),
        "dep": np.full(n, -1, dtype=np.int64),
    }, f"scenario {sc.name}")


def same_workload(a: pa.Table, b: pa.Table) -> bool:
    """Same operations, same order (metadata aside)."""
    return a.num_rows == b.num_rows and a.equals(b, check_metadata=False)


def workload_metadata(sc: Scenario, workload: pa.Table) -> dict[str, str]:
    """Trace metadata describing a replay's workload: empty when it is the scenario's own
    traffic (the trace is then what `ethlink run` writes), else the table itself."""
    if sc.flows or sc.workloads:
        if same_workload(workload, scenario_workload(sc)):
            return {}
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, workload.schema.remove_metadata(),
                           options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(workload.replace_schema_metadata(None))
    return {"workload": base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii"),
            "workload_format": "arrow-ipc-stream+zstd+base64", "workload_rows": str(workload.num_rows)}


def _decode_workload(md: dict[str, str], where: str) -> pa.Table:
    fmt = md.get("workload_format", "")
    if fmt != "arrow-ipc-stream+zstd+base64":
        raise TraceError(f"{where}: workload metadata in unknown format {fmt!r}")
    try:
        raw = base64.b64decode(md["workload"], validate=True)
        table = pa.ipc.open_stream(pa.py_buffer(raw)).read_all()
    except (ValueError, pa.ArrowException) as exc:
        raise TraceError(f"{where}: corrupted workload metadata: {exc}") from None
    return as_workload(table, f"{where} (workload metadata)")


def workload_from_trace(trace: str | os.PathLike[str] | pa.Table, *, check: bool = True) -> pa.Table:
    """The operations the traced run posted (see module doc), as a workload table.
    `trace`: a trace file or a table from read_trace. With `check`, the trace's packets
    are checked against the ops (a metadata that does not describe its run is refused)."""
    where = "trace" if isinstance(trace, pa.Table) else str(trace)
    table = trace if isinstance(trace, pa.Table) else read_trace(trace)
    md = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if "workload" in md:
        wl = _decode_workload(md, where)
    elif "scenario_source" in md:
        try:
            sc = fabric_scenario(json.loads(md["scenario_source"]))
        except (ValueError, ScenarioError) as exc:
            raise TraceError(f"{where}: its scenario_source does not load: {exc}") from None
        wl = scenario_workload(sc)
    else:
        raise TraceError(f"{where}: the metadata has neither 'workload' nor 'scenario_source', and the "
                         f"engine does not trace operation issue yet: the operations cannot be recovered")
    if check:
        _check_against_trace(wl, table, where)
    return wl


def _check_against_trace(wl: pa.Table, table: pa.Table, where: str) -> None:
    """The trace's data packets agree with the ops: flow index in range, endpoints (READ
    responses travel back), priority, no packet before the post time of an op without
    dependency."""
    from .trace import FRAME_KINDS, PF_TRIM, codes

    kind = codes(table, "kind")
    data = (kind == FRAME_KINDS.index("raw")) | (kind == FRAME_KINDS.index("roce")) | (kind == FRAME_KINDS.index("uet"))
    flow = table["flow"].to_numpy()
    data &= flow >= 0
    if not data.any():
        return
    f = flow[data]
    n = wl.num_rows
    if f.max() >= n:
        raise TraceError(f"{where}: packets of flow {int(f.max())}, but the run's workload has {n} ops: "
                         f"the metadata does not describe this run")
    src, dst = table["src"].to_numpy()[data], table["dst"].to_numpy()[data]
    prio = table["prio"].to_numpy()[data]
    # a trimmed UET frame travels on at uet.trim_prio: its priority is the switch's choice
    trimmed = (table["flags"].to_numpy()[data] & PF_TRIM) != 0
    ws, wd = wl["src"].to_numpy()[f], wl["dst"].to_numpy()[f]
    wp = wl["prio"].to_numpy()[f]
    read = (np.asarray(wl["op"].to_pylist(), dtype=object) == "read")[f]
    bad = ~(((src == ws) & (dst == wd)) | (read & (src == wd) & (dst == ws))) | ((prio != wp) & ~trimmed)
    if bad.any():
        i = _first_bad(bad)
        raise TraceError(f"{where}: a packet of flow {int(f[i])} goes h{src[i]}->h{dst[i]} at priority {prio[i]}, "
                         f"but op {int(f[i])} is h{ws[i]}->h{wd[i]} at priority {wp[i]}: the metadata does "
                         f"not describe this run")
    t = table["time_ps"].to_numpy()[data]
    free = (wl["dep"].to_numpy() < 0)[f]
    early = free & (t < wl["time_ps"].to_numpy()[f])
    if early.any():
        i = _first_bad(early)
        raise TraceError(f"{where}: flow {int(f[i])} has a packet at {int(t[i])} ps, before its op's post time "
                         f"{int(wl['time_ps'].to_numpy()[f[i]])} ps: the metadata does not describe this run")


# ---------------------------------------------------------------------------------------
# Running a replay

def replay_simulation(workload: pa.Table, fabric: Scenario, *, trace: str | None = None,
                      on_step: Callable[[str], None] | None = None) -> "Simulation":
    """An ethlink.Simulation of `workload` on `fabric` (its traffic replaced); `on_step`
    as Simulation's."""
    from . import budget
    from .sim import Simulation

    size = workload["bytes"].to_numpy()
    budget.check(fabric, parts=budget.with_workload(fabric, workload.num_rows, int(size.max(initial=0))))
    return Simulation(fabric, trace=trace, workload=workload, on_step=on_step)


def replay_metadata(sim: "Simulation", workload: pa.Table) -> dict[str, str]:
    """The trace metadata of a replay: a run's (trace.simulation_metadata) plus the
    workload when it is not the scenario's own traffic."""
    from .trace import simulation_metadata

    return {**simulation_metadata(sim), **workload_metadata(sim.scenario, workload)}
