"""Parameter sweeps: one scenario run at every point of a grid of overrides, in parallel.

    from ethlink.sweep import sweep
    table = sweep("ls-efficiency", "out/sw", grid={"ls.header": ["ethlink", "roce"],
                                                   "loadstore.0.sizes": [[64], [256]]},
                  seeds=[1, 2], jobs=2)          # a pyarrow Table, one row per point

What it does. A grid maps override keys (the dotted paths of `ethlink run --set`) to
lists of values; its points are the cartesian product of those lists (in the order the
keys were given, the last key varying fastest), each repeated for every seed of `seeds`
(innermost). Every point's scenario is built and validated before any point runs, so a
bad key or value fails at once, naming the key. Points then run in worker processes,
a `concurrent.futures.ProcessPoolExecutor` of `jobs` processes (default: the CPUs this
process may use), or, given a scheduler address, as tasks of an existing Dask
distributed cluster (`pip install 'ethlink[sweep]'`; its workers need ethlink installed
and OUTDIR on a file system they share with the client). A point runs exactly as
`ethlink run` would with the same overrides (same summary.json, tables and trace) and writes

    OUTDIR/<name>/flows.parquet, qps.parquet, ports.parquet    per-flow, QP, port rows
    OUTDIR/<name>/summary.json          written last, atomically: present = point finished
    OUTDIR/<name>/trace.arrow           when the points trace (--trace, or run.trace)
    OUTDIR/traces/point=<i>/part-0.parquet   the same rows, one hive partition per point

where <name> is the point's index and its overrides, e.g. `01-ls.header=roce-seed=2`.
The sweep then writes OUTDIR/sweep.csv and OUTDIR/sweep.parquet: one row per point with
`point` (index), `name`, one column per grid key (the value), `seed`, then one column
per metric. A metric is a dotted path into summary.json (`ls.p99_ps`, `fct_ps.max`,
`drops.buffer_full`), or a cell of the point's flows, qps or ports table as
`TABLE.ROW.COLUMN` (`flows.0.fct_ps`: row 0 of flows.parquet; a negative row counts from
the end); a path that ends at a table of counts (`drops`) gives their sum; a key absent
from this point's summary (e.g. `ls.*` with no Load/Store traffic), or a row it lacks,
gives null. Metrics are checked against the keys summary.json can have before
anything runs. Wall-clock metrics (`wall_s`, `events_per_s`) are allowed but not in the
default set, which keeps sweep.csv a function of the grid alone: the same sweep gives the
same file whatever `jobs` is.

Failures: a point that fails (its scenario cannot compile on the worker, the disk fills,
a worker dies) gets its error in sweep.csv's `error` column; sweep() then raises
SweepFailed with every failed point's error (after writing the files), so a script cannot
take a failed sweep for results. sweep() also works in a script without an
`if __name__ == "__main__":` guard (see _main_not_reimported).

Interruption: Ctrl-C stops the sweep at once (running points are killed; the pool's
workers ignore SIGINT so that no point is left half-written by the signal). Finished
points keep complete files; sweep.csv and sweep.parquet are written with the finished
points and the exit status is 130. A point directory without summary.json did not finish.

Limits: one point per process at a time (the engine is single-threaded); a point's
scenario is shipped to the worker as data, so a TOML file need not be on the workers;
trace partitions are written by the workers (so OUTDIR must be shared with Dask workers).
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import os
import re
import shutil
import signal
import sys
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import scenarios, units
from .fileio import replacing
from .scenario import Scenario, ScenarioError
from .tables import TABLE_NAMES, read_table

__all__ = ["DEFAULT_METRICS", "SweepError", "Point", "parse_grid_item", "split_values", "parse_value",
           "toml_literal", "plan", "check_metrics", "require_dask", "metric_value", "run_point", "sweep", "results_table"]

DEFAULT_METRICS = (
    "sim_time_ps", "flows_completed", "fct_ps.p50", "fct_ps.p99", "fct_ps.max", "slowdown.p99",
    "goodput_bps", "drops", "pfc_pause_frames", "ecn_marked", "retransmitted_packets",
    "ls.p50_ps", "ls.p99_ps", "ls.ops_per_s", "ls.efficiency",
)
# summary.json tables whose keys depend on the run (drop reasons, switch names, op kinds):
# a metric may name any key below them.
_OPEN_TABLES = ("drops", "buffer_hwm_bytes", "ls.by_kind")
_FIXED_COLUMNS = ("point", "name", "seed", "error")


class SweepError(ValueError):
    """A sweep that cannot start: bad grid, seeds, metric or scenario; names the culprit."""


class SweepFailed(RuntimeError):
    """Points of a sweep failed. `table` holds every point's row (sweep.csv was written,
    with an error column) and `errors` maps each failed point's name to its error."""

    def __init__(self, table: pa.Table, errors: dict[str, str]):
        self.table, self.errors = table, errors
        shown = "; ".join(f"{n}: {e}" for n, e in list(errors.items())[:3])
        more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
        super().__init__(f"{len(errors)} of {table.num_rows} sweep point(s) failed: {shown}{more} "
                         f"(sweep.csv has an error column)")


# ---------------------------------------------------------------------------------------
# Grid syntax: --grid KEY=V1,V2,...

def split_values(raw: str) -> list[str]:
    """Split at the commas that are outside brackets, braces and quotes:
    'a,"b,c",[1,2]' -> ['a', '"b,c"', '[1,2]']. Items are stripped of surrounding spaces."""
    items, cur, depth, quote, i = [], [], 0, "", 0
    while i < len(raw):
        ch = raw[i]
        if quote:
            cur.append(ch)
            if ch == "\\" and quote == '"' and i + 1 < len(raw):
                cur.append(raw[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch in "[{":
            depth += 1
            cur.append(ch)
        elif ch in "]}":
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            items.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    items.append("".join(cur).strip())
    return items


def parse_value(text: str) -> Any:
    """A value as `--set` reads it: TOML (1, 2.5, true, "x", [64], {a = 1}), else the plain
    string (400G, roce)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_grid_item(item: str) -> tuple[str, list[Any]]:
    """'ls.header=ethlink,roce' -> ('ls.header', ['ethlink', 'roce'])."""
    if "=" not in item:
        raise SweepError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. --grid topology.hosts=8,16")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise SweepError(f"--grid {item!r}: the key must be a dotted path such as ls.header")
    if key == "seed":
        raise SweepError("--grid seed=...: give seeds with --seeds 1,2,3")
    values = split_values(raw)
    empty = [i for i, v in enumerate(values) if v == ""]
    if empty:
        raise SweepError(f"--grid {key}: value {empty[0] + 1} of {raw!r} is empty")
    return key, [parse_value(v) for v in values]


def toml_literal(v: Any) -> str:
    """The TOML text of a value, so that parse_value(toml_literal(v)) == v."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)       # JSON string escapes are TOML's
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_literal(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_literal(x)}" for k, x in v.items()) + "}"
    raise SweepError(f"grid value {v!r}: a {type(v).__name__} has no TOML form; use numbers, "
                     f"strings, booleans, lists or tables")


# ---------------------------------------------------------------------------------------
# Points

@dataclass(frozen=True)
class Point:
    """One run of the sweep: its index, directory name, grid values and seed, and the
    scenario (validated) it runs."""

    index: int
    name: str
    values: tuple[tuple[str, Any], ...]
    seed: int
    overrides: tuple[str, ...]
    source: dict = field(repr=False, compare=False)
    scenario_name: str = ""


def _slug(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", text)


def plan(scenario: str, grid: Mapping[str, Sequence[Any]], *, seeds: Sequence[int] | None = None,
         sets: Sequence[str] = ()) -> list[Point]:
    """Every point of the sweep, each scenario built and validated (a ScenarioError names
    the point and the key). `scenario`: a built-in name or a TOML path; `sets`: overrides
    applied to every point before the grid's."""
    for key, vals in grid.items():
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Iterable):
            raise SweepError(f"grid {key}: expected a list of values, got {vals!r}")
        if not list(vals):
            raise SweepError(f"grid {key}: no values")
    if seeds is not None:
        seeds = list(seeds)
        if not seeds:
            raise SweepError("--seeds: no seed given")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63:
                raise SweepError(f"--seeds: {s!r} is not a seed (an integer 0..2^63-1)")
        if len(set(seeds)) != len(seeds):
            raise SweepError(f"--seeds: {seeds} repeats a seed")
    keys = list(grid)
    combos = list(itertools.product(*(list(grid[k]) for k in keys))) or [()]
    seed_list: list[int | None] = list(seeds) if seeds is not None else [None]
    total = len(combos) * len(seed_list)
    width = len(str(total - 1))
    points = []
    for ci, combo in enumerate(combos):
        for si, seed in enumerate(seed_list):
            i = ci * len(seed_list) + si
            overrides = list(sets) + [f"{k}={toml_literal(v)}" for k, v in zip(keys, combo)]
            if seed is not None:
                overrides.append(f"seed={seed}")
            try:
                sc = scenarios.load(scenario, overrides)
            except ScenarioError as exc:
                where = ", ".join([f"{k}={toml_literal(v)}" for k, v in zip(keys, combo)]
                                  + ([f"seed={seed}"] if seed is not None else []))
                raise ScenarioError(f"grid point {i}{f' ({where})' if where else ''}: {exc}") from None
            parts = [f"{k}={_slug(v)}" for k, v in zip(keys, combo)]
            if seed is not None:
                parts.append(f"seed={seed}")
            name = "-".join([f"{i:0{width}d}", *parts])[:120]
            points.append(Point(i, name, tuple(zip(keys, combo)), sc.seed, tuple(overrides),
                                sc.source, sc.name))
    return points


# ---------------------------------------------------------------------------------------
# Metrics

@functools.lru_cache(maxsize=1)
def _probe_summary() -> dict:
    """summary.json of a tiny run with every kind of entry (a RoCE flow under HPCC, a UET flow, a
    Load/Store op), and the columns of its tables: the keys a metric may name."""
    from .sim import Simulation

    sc = Scenario.from_dict({
        "topology": {"kind": "star", "hosts": 2},
        "hpcc": {},
        "flow": [{"src": 0, "dst": 1, "size": 16384, "transport": "roce"},
                 {"src": 1, "dst": 0, "size": 64, "transport": "uet"}],
        "ls_op": [{"src": 0, "dst": 1, "kind": "load", "size": 64}],
    })
    res = Simulation(sc).run()
    return {**res.summary, **{n: res.table(n).column_names for n in TABLE_NAMES}}


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics, each checked against the keys summary.json can have (SweepError
    naming the metric and the keys allowed where it goes wrong)."""
    probe = _probe_summary()
    out = []
    for m in metrics:
        if not m or any(not p for p in m.split(".")):
            raise SweepError(f"--metric {m!r}: expected a dotted key into summary.json, e.g. ls.p99_ps")
        if m in out:
            continue
        head, *rest = m.split(".")
        if head in TABLE_NAMES:
            if len(rest) != 2 or not re.fullmatch(r"-?\d+", rest[0]):
                raise SweepError(f"--metric {m}: {head} is a table; name a cell as {head}.ROW.COLUMN, "
                                 f"e.g. {head}.0.{probe[head][-1]}")
            if rest[1] not in probe[head]:
                raise SweepError(f"--metric {m}: {head} has no column {rest[1]!r}; columns: "
                                 f"{', '.join(probe[head])}")
            out.append(m)
            continue
        node: Any = probe
        walked: list[str] = []
        for part in m.split("."):
            if ".".join(walked) in _OPEN_TABLES:
                break
            if isinstance(node, list):
                if not re.fullmatch(r"-?\d+", part):
                    raise SweepError(f"--metric {m}: {'.'.join(walked)} is a list; index it, e.g. "
                                     f"{'.'.join(walked)}.0.{part}")
                if not node:
                    break
                node = node[0]
            elif isinstance(node, dict):
                if part not in node:
                    where = ".".join(walked) or "summary.json"
                    keys = ", ".join(sorted(node))
                    raise SweepError(f"--metric {m}: {where} has no key {part!r}; keys: {keys}")
                node = node[part]
            else:
                raise SweepError(f"--metric {m}: {'.'.join(walked)} is a value, it has no key {part!r}")
            walked.append(part)
        out.append(m)
    return out


def metric_value(summary: Mapping[str, Any], metric: str, tables: Callable[[str], Any] | None = None) -> Any:
    """The value of a dotted metric in a summary: a number, string or bool; the sum of a
    table of counts; None when absent here. `tables(name)` gives the run's flows, qps or
    ports table (Arrow), for a metric TABLE.ROW.COLUMN."""
    head, *rest = metric.split(".")
    if head in TABLE_NAMES and head not in summary:
        return _cell(tables(head), rest) if tables is not None else None
    node: Any = summary
    for part in metric.split("."):
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                return None
        elif isinstance(node, Mapping):
            if part not in node:
                return 0 if metric.split(".")[0] == "drops" else None
            node = node[part]
        else:
            return None
    if isinstance(node, Mapping):
        vals = list(node.values())
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            return sum(vals)
        return json.dumps(node, sort_keys=True)
    if isinstance(node, list):
        return json.dumps(node)
    return node


def _cell(table, rest: list[str]) -> Any:
    """table[COLUMN][ROW] for rest = [ROW, COLUMN]; None if either is absent; a list in JSON."""
    if len(rest) != 2 or rest[1] not in table.column_names:
        return None
    try:
        row = int(rest[0])
    except ValueError:
        return None
    if not -table.num_rows <= row < table.num_rows:
        return None
    v = table[rest[1]][row % table.num_rows].as_py()
    return json.dumps(v) if isinstance(v, list) else v


# ---------------------------------------------------------------------------------------
# One point (runs in a worker process or on a Dask worker)

def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_point(task: Mapping[str, Any]) -> dict[str, Any]:
    """Run one point as `ethlink run` would and write its files. `task`: index, name,
    source (scenario data after overrides), outdir, trace (level or None), until_ps,
    metrics. Returns {index, metrics, trace_rows, error}."""
    from .cli import _clean_nan, write_json_atomic
    from .sim import Result, Simulation
    from .topology import TopologyError
    from .trace import TraceWriter, partial_path

    out = Path(task["outdir"]) / task["name"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)       # present only once this run finished
    try:
        sc = Scenario.from_dict(task["source"])
        sim = Simulation(sc, trace=task["trace"])
    except (ScenarioError, TopologyError) as exc:
        return {"index": task["index"], "metrics": {}, "trace_rows": None, "error": str(exc)}
    writer = None
    if sim.trace_level != "off":
        writer = TraceWriter.for_simulation(sim, out / "trace.arrow")
    else:
        for p in (out / "trace.arrow", partial_path(out / "trace.arrow")):
            p.unlink(missing_ok=True)
    try:
        result: Result = sim.run(task["until_ps"], trace_sink=writer.write if writer else None)
    except BaseException as exc:
        if writer is not None:
            writer.close(False, f"{type(exc).__name__}: {exc}")
        raise
    rows = None
    if writer is not None:
        writer.close(True)
        rows = writer.rows
        _write_partition(out / "trace.arrow", Path(task["outdir"]) / "traces", task["index"])
    result.write_tables(out)
    summary = _clean_nan(result.summary)
    write_json_atomic(out / "summary.json", summary)
    return {"index": task["index"], "metrics": {m: metric_value(summary, m, result.table) for m in task["metrics"]},
            "trace_rows": rows, "error": ""}


def _write_partition(trace_file: Path, base: Path, index: int) -> None:
    """Copy a point's trace into the sweep's dataset as the partition point=<index>: written
    under a hidden temporary name (dataset readers skip names starting with '.'), then
    renamed, so a partition is whole or absent."""
    import numpy as np
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    tmp = base / f".tmp-point={index}"
    final = base / f"point={index}"
    shutil.rmtree(tmp, ignore_errors=True)
    with pa.memory_map(str(trace_file)) as src:
        reader = pa.ipc.open_file(src)
        schema = reader.schema.remove_metadata().append(pa.field("point", pa.int32(), nullable=False))

        def batches():
            for i in range(reader.num_record_batches):
                b = reader.get_batch(i)
                yield pa.RecordBatch.from_arrays([*b.columns, pa.array(np.full(b.num_rows, index, np.int32))],
                                                 schema=schema)

        ds.write_dataset(batches(), tmp, schema=schema, format="parquet",
                         partitioning=ds.partitioning(pa.schema([("point", pa.int32())]), flavor="hive"),
                         basename_template="part-{i}.parquet", existing_data_behavior="overwrite_or_ignore")
    written = tmp / f"point={index}"
    if not written.exists():            # a trace without rows: an empty partition file
        written.mkdir(parents=True)
        pq.write_table(schema.empty_table().drop_columns(["point"]), written / "part-0.parquet")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(written, final)
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# The sweep

def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def _column(values: list[Any]) -> pa.Array:
    """One column of the results: numbers, bools or strings as they are; a mix (or lists
    and tables) as text, lists and tables in JSON."""
    try:
        if any(isinstance(v, (list, dict)) for v in values):
            raise pa.ArrowInvalid("nested")
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values],
                        pa.string())


def results_table(points: Sequence[Point], results: Mapping[int, dict], metrics: Sequence[str]) -> pa.Table:
    """One row per finished point, in point order: point, name, grid values, seed,
    metrics (and error, when a point failed)."""
    done = [p for p in points if p.index in results]
    cols: dict[str, pa.Array] = {
        "point": pa.array([p.index for p in done], pa.int32()),
        "name": pa.array([p.name for p in done], pa.string()),
    }
    keys = [k for k, _ in points[0].values] if points else []
    for j, k in enumerate(keys):
        cols[k] = _column([p.values[j][1] for p in done])
    cols["seed"] = pa.array([p.seed for p in done], pa.int64())
    for m in metrics:
        cols[m] = _column([results[p.index]["metrics"].get(m) for p in done])
    errors = [results[p.index]["error"] for p in done]
    if any(errors):
        cols["error"] = pa.array(errors, pa.string())
    return pa.table(cols)


def write_results(table: pa.Table, outdir: Path) -> tuple[Path, Path]:
    """OUTDIR/sweep.csv and OUTDIR/sweep.parquet, each written beside and renamed."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    csv_path, pq_path = outdir / "sweep.csv", outdir / "sweep.parquet"
    with replacing(csv_path) as tmp:
        pcsv.write_csv(table, str(tmp))
    with replacing(pq_path) as tmp:
        pq.write_table(table, str(tmp))
    return csv_path, pq_path


def _result_or_error(future, task) -> dict[str, Any]:
    """A finished point's result; an exception in its worker becomes the point's error."""
    try:
        return future.result()
    except Exception as exc:       # the engine, the file system, a worker that died
        return {"index": task["index"], "metrics": {}, "trace_rows": None, "error": f"{type(exc).__name__}: {exc}"}


class _Local:
    """Points on a local process pool whose workers ignore Ctrl-C."""

    def __init__(self, jobs: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent has threads (the progress bar) that fork would copy
        # in the middle of whatever they hold.
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                        initializer=_ignore_sigint)

    def run(self, tasks):
        from concurrent.futures import as_completed

        with _main_not_reimported():
            futures = {self.pool.submit(run_point, t): t for t in tasks}
        for f in as_completed(futures):
            yield _result_or_error(f, futures[f])

    def close(self, abort: bool) -> None:
        if abort:
            procs = list(getattr(self.pool, "_processes", {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            # NOTE: ProcessPoolExecutor cannot stop a running task; its worker processes
            # are killed so that an interrupted sweep stops now (Python 3.14 has
            # terminate_workers() for this).
            for p in procs:
                p.kill()
            for p in procs:
                p.join()
        else:
            self.pool.shutdown(wait=True)


@contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Hide the main script from the workers being started in the block.

    NOTE: a spawned worker first re-runs the parent's main script (multiprocessing's
    "safe importing of the main module", docs: multiprocessing programming guidelines),
    so a script that calls sweep() at top level, without an `if __name__ == "__main__":`
    guard, would start a sweep inside every worker: they fail to start and every point
    fails (BrokenProcessPool). Workers only run `run_point`, which lives in this module,
    so they never need the script: while they are started (ProcessPoolExecutor spawns
    them in submit, the start method not being fork) the main module's `__file__` and
    `__spec__`, which tell the worker what to re-run, are hidden, and put back after."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    if "__spec__" in saved:
        main.__spec__ = None
    if "__file__" in saved:
        del main.__file__
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)

def require_dask() -> None:
    """SweepError unless Dask distributed can be imported."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise SweepError("--scheduler needs Dask distributed, which is not installed: "
                         "pip install 'ethlink[sweep]'") from None


class _Dask:
    """Points as tasks of an existing Dask distributed cluster."""

    def __init__(self, address: str):
        require_dask()
        from dask.distributed import Client

        try:
            self.client = Client(address, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise SweepError(f"--scheduler {address}: cannot connect: {exc}") from None
        self.futures: list = []

    def run(self, tasks):
        from dask.distributed import as_completed

        import uuid

        by_key = {}
        sweep_id = uuid.uuid4().hex[:12]        # task keys unique to this sweep on a shared cluster
        for t in tasks:
            f = self.client.submit(run_point, t, key=f"ethlink-sweep-{sweep_id}-{t['index']}", pure=False)
            by_key[f.key] = t
            self.futures.append(f)
        for f in as_completed(self.futures):
            yield _result_or_error(f, by_key[f.key])

    def close(self, abort: bool) -> None:
        if abort and self.futures:
            self.client.cancel(self.futures)
        self.client.close()


def sweep(scenario: str, outdir: str | os.PathLike[str], grid: Mapping[str, Sequence[Any]], *,
          seeds: Sequence[int] | None = None, sets: Sequence[str] = (), jobs: int | None = None,
          metrics: Sequence[str] | None = None, trace: str | None = None, until_ps: int | None = None,
          scheduler: str | None = None, points: list[Point] | None = None,
          on_point: Callable[[Point, dict], None] | None = None) -> pa.Table:
    """Run a sweep (see module doc) and return its results table (also written to
    OUTDIR/sweep.csv and OUTDIR/sweep.parquet). `on_point(point, result)` is called in
    this process as each point finishes. A KeyboardInterrupt stops the sweep, writes the
    finished points' rows and is raised again. If any point failed, SweepFailed is raised
    after the files are written; it carries the table and each point's error."""
    if points is None:
        points = plan(scenario, grid, seeds=seeds, sets=sets)
    metrics = check_metrics(list(metrics) if metrics is not None else DEFAULT_METRICS)
    clash = [m for m in metrics if m in _FIXED_COLUMNS or (points and m in dict(points[0].values))]
    if clash:
        raise SweepError(f"--metric {clash[0]}: already a column of sweep.csv")
    if jobs is not None and jobs < 1:
        raise SweepError(f"--jobs {jobs}: must be at least 1")
    if trace is not None and trace not in ("off", "endpoints", "hop"):
        raise SweepError(f"trace level {trace!r}: choose off, endpoints or hop")
    out = Path(outdir)
    tasks = [{"index": p.index, "name": p.name, "source": p.source, "outdir": str(out.resolve()),
              "trace": trace, "until_ps": until_ps, "metrics": list(metrics)} for p in points]
    runner = _Dask(scheduler) if scheduler else _Local(min(jobs or _cpus(), max(1, len(points))))
    out.mkdir(parents=True, exist_ok=True)
    # The dataset is this sweep's alone: partitions of an earlier sweep would mix in.
    shutil.rmtree(out / "traces", ignore_errors=True)
    results: dict[int, dict] = {}
    by_index = {p.index: p for p in points}
    aborted = False
    try:
        for r in runner.run(tasks):
            results[r["index"]] = r
            if on_point is not None:
                on_point(by_index[r["index"]], r)
    except BaseException:
        aborted = True
        raise
    finally:
        runner.close(aborted)
        if aborted and not scheduler:
            _recover_or_remove(out, [p for p in points if p.index not in results], results, metrics)
        table = results_table(points, results, metrics)
        write_results(table, out)
    errors = {by_index[i].name: r["error"] for i, r in sorted(results.items()) if r["error"]}
    if errors:
        raise SweepFailed(table, errors)
    return table


def _recover_or_remove(out: Path, points: Sequence[Point], results: dict[int, dict],
                       metrics: Sequence[str]) -> None:
    """After the local workers were killed, for the points whose result did not arrive: a
    point that wrote its summary.json (the last file it writes) finished, and joins the
    results; any other has what it wrote removed (a trace without its summary, a
    partition), so OUTDIR holds the points of sweep.csv and nothing half-done."""
    from .trace import partial_path

    for p in points:
        d = out / p.name
        try:
            summary = json.loads((d / "summary.json").read_text())
        except (OSError, ValueError):
            summary = None
        if summary is not None:
            tables = functools.partial(read_table, d)
            results[p.index] = {"index": p.index, "metrics": {m: metric_value(summary, m, tables) for m in metrics},
                                "trace_rows": None, "error": ""}
            continue
        # the trace, the trace being written, the tables and a summary, written or being
        # written (fileio.replacing)
        tables_written = [d / f"{n}.parquet" for n in TABLE_NAMES]
        for f in (d / "trace.arrow", partial_path(d / "trace.arrow"), *tables_written, *d.glob("*.tmp")):
            f.unlink(missing_ok=True)
        for part in (f".tmp-point={p.index}", f"point={p.index}"):
            shutil.rmtree(out / "traces" / part, ignore_errors=True)
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def fmt_metric(key: str, v: Any) -> str:
    """A metric for the terminal table: times and rates with units, counts with separators."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    parts = key.split(".")
    if isinstance(v, (int, float)) and any(p.endswith("_ps") for p in parts):     # fct_ps.max too
        return units.fmt_time(int(v))
    if isinstance(v, (int, float)) and any(p.endswith("_bps") for p in parts):
        return units.fmt_rate(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(v) >= scale:
                return f"{v / scale:.4g} {suffix}"
        return f"{v:.4g}"
    return str(v)
