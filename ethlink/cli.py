"""The `ethlink` command line.

    ethlink list                                   built-in scenarios
    ethlink run SCENARIO -o OUTDIR [--seed N] [--set key=value ...] [--until T] [--trace LEVEL]
                [--trace-compression zstd|lz4|none] [--trace-node NAME] [--trace-flow F] [--trace-event E]
    ethlink pcap TRACE -o OUT.pcap (--port N | --node NAME --port-index I) [--event E] [--flow F] [--limit N]
    ethlink show TRACE [--row N | --node NAME --port N --event E --flow F --pkt ID] [--limit N] [--brief]
    ethlink replay WORKLOAD --fabric SCENARIO -o OUTDIR [--seed N] [--set key=value ...] [--trace LEVEL]
    ethlink workload TRACE -o WL.arrow|WL.parquet|WL.csv
    ethlink plot TRACE -o DIR [--summary summary.json] [--top N]
    ethlink sweep SCENARIO -o OUTDIR --grid KEY=V1,V2,... [--grid ...] [--seeds 1,2,3] [--jobs N]
                [--metric KEY ...] [--set key=value ...] [--until T] [--trace LEVEL] [--scheduler ADDRESS]

SCENARIO is a built-in name (see `ethlink list`) or a path to a TOML file. A run shows a
progress bar naming its phase (compile and its step; run: events/s and `sim T`, the time
of the last frame event, which the table's "simulated time (last frame)" and
summary.json's sim_time_ps also give; the bar itself fills with the engine's clock against
the horizon, which runs on through timers that fire after the last frame; write: each
file), prints a summary table and writes
OUTDIR/flows.parquet, qps.parquet, ports.parquet, then OUTDIR/summary.json (aggregates;
keys and columns documented in docs/results.md) and, when the trace level is not off,
OUTDIR/trace.arrow (schema in ethlink/trace.py). Scenario errors are reported before
anything runs, naming the field, and nothing is written; the exit status is 2 for bad
input (scenario, options, trace file), 1 for an output that cannot be written (one line
naming the file: missing directory, read-only, disk full) and 128 + the signal after
SIGINT (Ctrl-C, 130), SIGTERM (143) or SIGHUP (129): the files then hold the results so
far and the trace says complete=false. A second signal stops at once; the trace is then
left as trace.arrow.partial, which read_trace reads.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from . import scenarios, units
from .scenario import MAX_TIME_PS, ScenarioError
from .topology import TopologyError

# Mirrors of ethlink.trace (which imports pyarrow: not at start-up); a test checks them.
TRACE_COMPRESSIONS, TRACE_DEFAULT_COMPRESSION = ("none", "zstd", "lz4"), "lz4"

class _LazyConsole:
    """rich's Console on stderr, imported on first use: a --quiet run, which prints only
    plain lines (`_say`), does not load rich (about 50 ms of imports)."""

    def __init__(self) -> None:
        self._console = None

    def get(self):
        """The rich Console itself (for a live display)."""
        if self._console is None:
            from rich.console import Console
            self._console = Console(stderr=True)
        return self._console

    def __getattr__(self, name):
        return getattr(self.get(), name)


console = _LazyConsole()


def _say(text: str) -> None:
    """A plain line on stderr: through rich on a terminal, else as it is (rich does not
    wrap it, and is not imported for it)."""
    if sys.stderr.isatty():
        console.print(text, markup=False)
    else:
        click.echo(text, err=True)


def _rich_table(**kw):
    from rich.table import Table
    return Table(**kw)


def _stdout_print(renderable) -> None:
    from rich.console import Console
    Console().print(renderable)


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temporary file beside `path`, then rename: readers never see half a file."""
    import json                             # with tempfile: loaded by a run's preload thread
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False, default=_json_default)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)           # mkstemp makes it 0600; a result is for reading
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _json_default(o):
    import numpy as np
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean_nan(obj):
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean_nan(v) for v in obj]
    return obj


class OutputError(click.ClickException):
    """An output that cannot be written (missing directory, read-only, disk full): one
    line naming the file, exit status 1."""

    exit_code = 1

    def __init__(self, path, exc: OSError, verb: str = "cannot write "):
        reason = "no space left on the device (disk full)" if exc.errno == errno.ENOSPC else \
            (exc.strerror or str(exc))
        super().__init__(f"{verb}{path}: {reason}")


@contextmanager
def _writing(path) -> Iterator[None]:
    """An OSError in the block becomes an OutputError naming `path`."""
    try:
        yield
    except OSError as exc:
        raise OutputError(path, exc) from None


def _check_parent(out: Path) -> None:
    """Fail before any work when the output file's directory does not exist."""
    if not out.parent.is_dir():
        raise OutputError(out, FileNotFoundError(errno.ENOENT, f"no directory {out.parent}"))


@contextmanager
def _new_outdir(outdir: Path) -> Iterator[None]:
    """Create OUTDIR for the block; if the block fails (a bad option found while setting
    up the outputs) an OUTDIR this created and left empty is removed: nothing is written."""
    created = not outdir.exists()
    with _writing(outdir):
        outdir.mkdir(parents=True, exist_ok=True)
    try:
        with _writing(outdir):
            yield
    except BaseException:
        if created and outdir.is_dir() and not any(outdir.iterdir()):
            outdir.rmdir()
        raise


class _Main(click.Group):
    """The command group, with the last line of defence of every command: an OSError no
    command caught is one line naming its file (exit 1), a closed stdout pipe nothing (exit
    141), running out of memory one line (exit 1), Ctrl-C outside a run's loop (loading,
    compiling) one line (exit 130)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            sys.exit(128 + signal.SIGINT)
        except MemoryError:
            raise click.ClickException("out of memory; make the scenario smaller (fewer hosts, flows or "
                                       "operations, smaller messages)") from None
        except BrokenPipeError:
            # the reader of stdout left (`ethlink show TRACE | head`): stop quietly, as
            # a Unix filter does; stdout goes to /dev/null so the final flush cannot fail
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + signal.SIGPIPE)
        except OSError as exc:
            raise OutputError(exc.filename or "a file", exc, verb="") from None


def _until_ps(until: str | None) -> int | None:
    """--until as picoseconds, in 0..MAX_TIME_PS."""
    if until is None:
        return None
    try:
        v = units.time_ps(until)
    except units.UnitError as exc:
        raise click.BadParameter(str(exc), param_hint="--until") from None
    if not 0 <= v <= MAX_TIME_PS:
        raise click.BadParameter(f"{until!r}: a stop time is in 0..1e6 s (11.6 days; times are int64 "
                                 f"picoseconds)", param_hint="--until")
    return v


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ethlink")
def main():
    """ethlink: packet-level emulation of GPU interconnect over Ethernet.

    Describe a fabric and a workload in TOML (or pick a built-in scenario), run it packet
    by packet and get completion times, drops, queue depths and a summary.json.
    """


@main.command("list")
def list_cmd():
    """List the built-in scenarios with their descriptions."""
    t = _rich_table(title="built-in scenarios", show_lines=False)
    t.add_column("name", style="bold")
    t.add_column("description")
    for n in scenarios.names():
        t.add_row(n, scenarios.describe(n))
    _stdout_print(t)


def load_scenario(name: str, seed: int | None, sets: tuple[str, ...]):
    overrides = list(sets)
    if seed is not None:
        overrides.append(f"seed={seed}")
    try:
        return scenarios.load(name, overrides)
    except ScenarioError as exc:
        raise click.UsageError(f"scenario {name}: {exc}") from None


@main.command("run")
@click.argument("scenario")
@click.option("-o", "--out", "outdir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Output directory (created); summary.json and the Parquet tables are written there.")
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a scenario field, e.g. --set topology.hosts=16 --set workload.0.size=2MiB.")
@click.option("--until", default=None, metavar="TIME",
              help='Stop at this simulated time, e.g. "2ms" (default: the scenario\'s run.until, else until idle).')
@click.option("--trace", type=click.Choice(["off", "endpoints", "hop"]), default=None,
              help="Trace level (default: the scenario's run.trace); not off writes OUTDIR/trace.arrow.")
@click.option("--trace-compression", type=click.Choice(TRACE_COMPRESSIONS), default=TRACE_DEFAULT_COMPRESSION,
              show_default=True, help="Compression of the trace's record batches.")
@click.option("--trace-node", "trace_nodes", multiple=True, metavar="NAME",
              help="Keep only trace rows at this node (repeatable).")
@click.option("--trace-flow", "trace_flows", multiple=True, type=int, metavar="F",
              help="Keep only trace rows of this flow index (repeatable).")
@click.option("--trace-event", "trace_events", multiple=True, metavar="EVENT",
              help="Keep only trace rows of this event, e.g. tx_start, drop (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def run_cmd(scenario, outdir, seed, sets, until, trace, trace_compression, trace_nodes, trace_flows,
            trace_events, quiet):
    """Run SCENARIO (a built-in name or a TOML file) and write OUTDIR/summary.json,
    flows.parquet, qps.parquet, ports.parquet (and OUTDIR/trace.arrow when tracing)."""
    from .sim import Simulation

    sc = load_scenario(scenario, seed, sets)
    until_ps = _until_ps(until)
    with _Phases(sc.name, quiet) as phases:
        phases.phase("compile")
        try:
            sim = Simulation(sc, trace=trace, on_step=phases.step)
        except (ScenarioError, TopologyError) as exc:
            raise click.UsageError(f"scenario {scenario}: {exc}") from None
        with _new_outdir(outdir):
            writer = _trace_writer(sim, outdir, trace_compression, trace_nodes, trace_flows, trace_events)
        with _writing(outdir):
            _run_to_outdir(sim, outdir, until_ps, writer, phases)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _StopRequest:
    """Ctrl-C (SIGINT), SIGTERM (kill, timeout, batch schedulers, container stops) or
    SIGHUP (a closed terminal) during a run asks it to stop at the next safe point: after
    the trace batch being written (or the progress report), so no drained trace record is
    lost between the engine and the file. A second signal stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = signal.SIGINT
        self._old: dict = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> bool:
        for s, old in self._old.items():
            signal.signal(s, old)
        return False

    def _on_signal(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum

    @property
    def reason(self) -> str:
        return f"interrupted ({signal.Signals(self.signum).name})"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


@contextmanager
def _signals_interrupt() -> Iterator[dict]:
    """SIGTERM and SIGHUP interrupt like Ctrl-C (a KeyboardInterrupt at once) while the
    block runs; the dict yielded holds the signal that did (`signum`)."""
    got = {"signum": signal.SIGINT}

    def on_signal(signum, frame):
        got["signum"] = signum
        raise KeyboardInterrupt

    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _abandon(writer, exc: BaseException) -> None:
    """Close the trace of a run that failed, marked complete=false with the reason. A
    failure of the close itself (the disk that made the run fail is still full) is not
    raised over the first: the trace is then left as trace.arrow.partial."""
    if writer is None:
        return
    try:
        writer.close(False, f"{type(exc).__name__}: {exc}")
    except Exception as second:         # noqa: BLE001 - reported, the first failure is raised
        console.print(f"[yellow]{writer.partial}: left unfinished ({type(second).__name__}: {second})[/]")


def _trace_writer(sim, outdir: Path, compression: str, nodes, flows, events):
    """The trace writer of a run, or None when the level is off (then ethlink.trace, and
    with it pyarrow, is not imported)."""
    if sim.trace_level == "off":
        if nodes or flows or events:
            raise click.UsageError("--trace-node/--trace-flow/--trace-event need a trace level: "
                                   "add --trace endpoints or --trace hop")
        stale = [p for p in (outdir / "trace.arrow", outdir / "trace.arrow.partial") if p.exists()]
        for p in stale:
            p.unlink()
            console.print(f"removed {p}: an earlier run's trace (this run does not trace)")
        return None
    from .trace import TraceFilter, TraceWriter

    filt = TraceFilter(tuple(nodes), tuple(flows), tuple(events))
    n_flows = len(sim.compiled.flows)
    bad = [f for f in flows if not 0 <= f < n_flows]
    if bad:
        raise click.BadParameter(f"flow {bad[0]}: this scenario has flows 0..{n_flows - 1}",
                                 param_hint="--trace-flow")
    try:
        return TraceWriter.for_simulation(sim, outdir / "trace.arrow", compression=compression,
                                          trace_filter=filt)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


# ---------------------------------------------------------------------------------------
# Reading traces: pcap and show.

# Values the trace's int32 and int64 columns can hold (a larger filter value matches nothing
# and cannot be compared with the column).
INT32 = click.IntRange(-2**31, 2**31 - 1)
INT64 = click.IntRange(-2**63, 2**63 - 1)

class BadInput(click.ClickException):
    """Bad input (a trace file or a filter): exit status 2, like a usage error."""

    exit_code = 2


def _open_trace(path):
    from .trace import TraceError, TraceInfo, read_trace

    try:
        table = read_trace(path)
        return table, TraceInfo.of(table, str(path))
    except TraceError as exc:
        raise BadInput(str(exc)) from None


def _check_port(info, port: int, hint: str) -> int:
    if not 0 <= port < info.n_ports:
        raise BadInput(f"{hint} {port}: this trace has ports 0..{info.n_ports - 1}")
    return port


def _check_events(events):
    from .trace import EVENT_NAMES

    for e in events:
        if e not in EVENT_NAMES:
            raise BadInput(f"--event {e}: no such event; events: {', '.join(EVENT_NAMES)}")


def _incomplete_note(info, path) -> None:
    if not info.complete:
        reason = info.metadata.get("incomplete_reason") or "unknown"
        console.print(f"[yellow]{path}: incomplete trace ({reason}): it ends early[/]")


@main.command("pcap")
@click.argument("trace_file", metavar="TRACE", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="pcap file to write (nanosecond timestamps).")
@click.option("--port", type=int, default=None, help="Capture point: this port index.")
@click.option("--node", default=None, metavar="NAME", help="Capture point: a port of this node (with --port-index).")
@click.option("--port-index", type=int, default=None, metavar="I", help="The node's I-th port (0-based).")
@click.option("--event", default="tx_start", show_default=True,
              help="Which rows of the port are captured: tx_start (its transmissions), rx, deliver, ...")
@click.option("--flow", "flows", multiple=True, type=INT32, metavar="F", help="Only frames of this flow (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N frames.")
def pcap_cmd(trace_file, out, port, node, port_index, event, flows, limit):
    """Write the frames one port sends (or receives) to a pcap that Wireshark opens."""
    from . import tracepcap
    from .frames import write_pcap

    if port is not None and (node is not None or port_index is not None):
        raise BadInput("give the capture point as --port N or as --node NAME --port-index I, not both")
    if port is None and (node is None or port_index is None):
        raise BadInput("choose a capture point: --port N, or --node NAME --port-index I")
    _check_events([event])
    _check_parent(out)
    table, info = _open_trace(trace_file)
    _incomplete_note(info, trace_file)
    if port is None:
        try:
            port = info.port_of(node, port_index)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    _check_port(info, port, "--port")
    sel, _ = tracepcap.select(table, ports=[port], events=[event], flows=flows, limit=limit)
    if sel.num_rows == 0:
        console.print(f"[yellow]no {event} rows at {info.describe_port(port)}"
                      f"{' for flows ' + ','.join(map(str, flows)) if flows else ''} "
                      f"(trace level {info.metadata.get('trace_level')}); writing an empty pcap[/]")
    for kind in tracepcap.kinds_in(sel):
        if tracepcap.MISSING_FIELDS[kind]:
            console.print(f"[yellow]{kind} frames: the trace lacks {', '.join(tracepcap.MISSING_FIELDS[kind])}; "
                          f"those fields take default values[/]")
    try:
        with _writing(out):
            n = write_pcap(out, tracepcap.frames(sel, info, context=table))
    except ValueError as exc:
        raise click.ClickException(f"building frames: {exc}") from None
    console.print(f"wrote {out} ({n:,} frames, {event} at {info.describe_port(port)})")


@main.command("show")
@click.argument("trace_file", metavar="TRACE", type=click.Path(path_type=Path))
@click.option("--row", type=click.IntRange(min=0), default=None, help="Show this row (0-based); no filters.")
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="Rows at this node (repeatable).")
@click.option("--port", "ports", multiple=True, type=int, metavar="N", help="Rows at this port index (repeatable).")
@click.option("--event", "events", multiple=True, metavar="EVENT", help="Rows of this event (repeatable).")
@click.option("--flow", "flows", multiple=True, type=INT32, metavar="F", help="Rows of this flow (repeatable).")
@click.option("--pkt", "pkts", multiple=True, type=INT64, metavar="ID", help="Rows of this packet uid (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="At most N rows.")
@click.option("--brief", is_flag=True, help="One line per row (scapy summary) instead of the decoded layers.")
def show_cmd(trace_file, row, nodes, ports, events, flows, pkts, limit, brief):
    """Print trace rows with their frames decoded by scapy: without filters the first
    frames (operation rows skipped), reading only the start of the trace."""
    import json

    import numpy as np
    import pyarrow as pa

    from . import tracepcap
    from .frames import build_frame, decode

    if row is not None and (nodes or ports or events or flows or pkts):
        raise BadInput("--row shows one row: give it without filters")
    _check_events(events)
    filtered = bool(nodes or ports or events or flows or pkts)
    whole = True
    if filtered:
        table, info = _open_trace(trace_file)
    elif row is not None:
        table, info, whole = _open_trace_head(trace_file, lambda t: t.num_rows > row)
    else:
        table, info, whole = _open_trace_head(trace_file, lambda t: _frame_rows(t).sum() >= limit)
    _incomplete_note(info, trace_file)
    if table.num_rows == 0:
        filters = {k: v for k, v in info.filters.items() if v}
        click.echo(f"{trace_file}: the trace has no rows (trace level {info.metadata.get('trace_level')}"
                   f"{', filters ' + json.dumps(filters) if filters else ''})")
        return
    if row is not None:
        if row >= table.num_rows:
            raise BadInput(f"--row {row}: the trace has rows 0..{table.num_rows - 1}")
        idx = np.array([row])
        sel = table.slice(row, 1)
    elif not filtered:
        # Frames first: operation and transaction rows (op_issue, op_complete, txn) open
        # a trace but have no frame; they are counted, and --event shows them.
        frame = _frame_rows(table)
        idx = np.nonzero(frame)[0][:limit]
        sel = table.take(pa.array(idx, pa.int64()))
        if len(idx):
            skipped = int((~frame[: idx[-1] + 1]).sum())
            total = info.metadata.get("rows")
            click.echo(f"{trace_file}: the first {len(idx)} frames (rows {idx[0]}..{idx[-1]}"
                       f"{f' of {int(total):,}' if total else ''})"
                       + (f"; the {skipped:,} rows among them are operations (op_issue, op_complete, txn: "
                          f"no frame; --event op_issue shows them)" if skipped else ""))
        if not whole:
            click.echo(f"(read the first {table.num_rows:,} rows; the rest of the file was checked on its "
                       f"time_ps and pkt columns: row counts, checksum, time order)")
    else:
        node_ids = []
        for n in nodes:
            try:
                node_ids.append(info.node_index(n))
            except ValueError as exc:
                raise BadInput(str(exc)) from None
        for p in ports:
            _check_port(info, p, "--port")
        sel, idx = tracepcap.select(table, nodes=node_ids, ports=ports, events=events, flows=flows,
                                    pkts=pkts, limit=limit)
    if sel.num_rows == 0:
        raise click.ClickException("no rows match")
    # Load/Store frames are rebuilt from the whole trace (txn rows, deliver order), once.
    ls = tracepcap.ls_frames(info, table) if {"ethlink", "roce"} & set(tracepcap.kinds_in(sel)) else None
    hp = tracepcap.int_records(info, table)        # HPCC INT records, from the whole trace too
    for i, r in zip(idx.tolist(), tracepcap.rows(sel)):
        head = _row_line(i, r, info)
        try:
            pkt = decode(build_frame(tracepcap.frame_row(r, info, ls=ls, hpcc=hp)))
        except ValueError as exc:
            click.echo(f"{head}\n  (frame not rebuilt: {exc})")
            continue
        if brief:
            click.echo(f"{head} | {pkt.summary()}")
            continue
        click.echo(head)
        missing = tracepcap.MISSING_FIELDS.get(r["kind"], ())
        if missing:
            click.echo(f"  not in the trace (defaults shown): {', '.join(missing)}")
        click.echo(_short_loads(pkt.show(dump=True), pkt))


def _open_trace_head(path, enough):
    """The first batches of a trace (read_trace_head) with its TraceInfo and whether
    they are the whole trace; exit 2 on a bad file."""
    from .trace import TraceError, TraceInfo, read_trace_head

    try:
        table, whole = read_trace_head(path, enough)
        return table, TraceInfo.of(table, str(path)), whole
    except TraceError as exc:
        raise BadInput(str(exc)) from None


def _frame_rows(table):
    """Mask of the rows that are frames (not op_issue, op_complete or txn rows)."""
    import numpy as np

    from .trace import EVENT_NAMES, codes

    ev = codes(table, "event")
    return ~np.isin(ev, [EVENT_NAMES.index(e) for e in ("op_issue", "op_complete", "txn")])


def _row_line(i: int, r: dict, info) -> str:
    port = f" {info.describe_port(r['port'])}" if r["port"] >= 0 else ""
    flow = f" flow {r['flow']}" if r["flow"] >= 0 else ""
    drop = f" reason {r['reason']}" if r["event"] == "drop" else ""
    qp = f" qp {r['qp']}" if r["qp"] >= 0 else ""
    syn = f" syndrome {r['syndrome']:#04x}" if r["kind"] == "roce_ack" else ""
    return (f"row {i}: {units.fmt_time(r['time_ps'])} ({r['time_ps']} ps) {r['event']}{drop} at "
            f"{info.nodes[r['node']]}{port} | pkt {r['pkt']}{flow} {_ends(r, info)} {r['kind']} "
            f"{r['size']} B payload {r['payload']} psn {r['psn']}{qp} prio {r['prio']} ecn {r['ecn']} "
            f"opcode {r['opcode']:#04x}{syn} flags {r['flags']} qbytes {r['qbytes']} addr {r['addr']}")


def _ends(r: dict, info) -> str:
    """Source and destination by name: hosts for end-to-end frames, nodes for hop-by-hop ones."""
    src, dst = r["src"], r["dst"]
    if r["kind"] in ("pfc", "cbfc"):
        return f"{info.nodes[src]}->{info.nodes[dst]}"
    if 0 <= src < len(info.hosts) and 0 <= dst < len(info.hosts):
        return f"{info.nodes[info.hosts[src]]}->{info.nodes[info.hosts[dst]]}"
    return f"host {src}->host {dst}"


def _short_loads(text: str, pkt, width: int = 100) -> str:
    """scapy's show prints a payload's every byte; keep the first ones and say how many."""
    from scapy.packet import Raw

    sizes = iter(len(layer.load) for layer in pkt.iterpayloads() if isinstance(layer, Raw))
    out = []
    for line in text.splitlines():
        key, sep, _ = line.partition("= ")
        if sep and key.strip() == "load":
            n = next(sizes, None)
            if len(line) > width:
                line = line[:width] + (f"... ({n} B)" if n is not None else "...")
        out.append(line)
    return "\n".join(out)


def _print_summary(s: dict) -> None:
    t = _rich_table(title=f"{s['scenario']} (seed {s['seed']})", show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right", overflow="fold")
    t.add_row("simulated time (last frame)", units.fmt_time(s["sim_time_ps"]))
    t.add_row("events", f"{s['events']:,}  ({(s['events_per_s'] or 0) / 1e6:.1f} M/s, wall {s['wall_s']:.2f} s)")
    t.add_row("flows completed", f"{s['flows_completed']:,} / {s['flows_total']:,}")
    t.add_row("bytes sent / delivered", f"{s['bytes_sent']:,} / {s['bytes_delivered']:,}")
    t.add_row("goodput", units.fmt_rate(s["goodput_bps"]))
    drops = s["drops"]
    t.add_row("drops", ", ".join(f"{k} {v:,}" for k, v in drops.items()) if drops else "0")
    if s["pfc_pause_frames"] or s["lossless_drops"]:
        t.add_row("pause frames / lossless drops", f"{s['pfc_pause_frames']:,} / {s['lossless_drops']:,}")
    if s["retransmitted_packets"] or s["timeouts"]:
        t.add_row("retransmitted / spurious / timeouts",
                  f"{s['retransmitted_packets']:,} / {s['spurious_retransmissions']:,} / {s['timeouts']:,}")
    if s["deadlock_detected"]:
        cyc = s["deadlock_cycle"]
        t.add_row("deadlock", " -> ".join(f"{c['node']}:{c['port']}" for c in cyc) + (f" -> {cyc[0]['node']}" if cyc else ""))
    if s["fct_ps"]:
        f = s["fct_ps"]
        t.add_row("FCT p50 / p99 / max", " / ".join(units.fmt_time(int(f[k])) for k in ("p50", "p99", "max")))
        sd = s["slowdown"]
        t.add_row("slowdown p50 / p99 / max", " / ".join(f"{sd[k]:.2f}" for k in ("p50", "p99", "max")))
    hp = s.get("hpcc")
    if hp:
        w = hp["window_final_bytes"]
        t.add_row("HPCC T / W_init / INT records", f"{units.fmt_time(hp['base_rtt_ps'])} / {hp['w_init_bytes']:,} B / "
                  f"{hp['int_records']:,}")
        if w:
            t.add_row("HPCC window min / final p50", f"{hp['window_min_bytes']:,} B / {int(w['p50']):,} B")
    ls = s.get("ls")
    if ls:
        rate = f"  ({ls['ops_per_s'] / 1e6:,.0f} M ops/s)" if ls.get("ops_per_s") else ""
        t.add_row("Load/Store ops completed", f"{ls['count']:,} / {ls['total']:,}{rate}")
        if ls.get("p50_ps") is not None:
            t.add_row("Load/Store p50 / p99 / max", " / ".join(units.fmt_time(int(ls[k]))
                                                              for k in ("p50_ps", "p99_ps", "max_ps")))
    _stdout_print(t)


def _print_warnings(s: dict) -> None:
    for w in s.get("warnings", ()):
        console.print(f"[yellow]warning:[/] {w}", highlight=False)

# ---------------------------------------------------------------------------------------
# Replay, workload extraction and plots.

class _Phases:
    """The progress display of a run, one bar whose label names the phase: compile (and
    its step), run (simulated time against the horizon, events/s), write (each file)."""

    def __init__(self, title: str, quiet: bool) -> None:
        self.title, self.quiet = title, quiet
        self.task = None
        self.name = ""
        self.bar = None
        if quiet:
            return                          # no display: rich's progress is not loaded
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("{task.fields[simt]}"), TextColumn("{task.fields[rate]}"),
                            TimeElapsedColumn(), console=console.get(), transient=False)

    def __enter__(self) -> "_Phases":
        if self.bar is None:
            return self
        self.bar.__enter__()
        self.task = self.bar.add_task(self.title, total=None, simt="", rate="")
        return self

    def __exit__(self, exc_type, *exc) -> bool:
        if self.bar is None:
            return False
        if exc_type is not None:
            self.bar.live.transient = True      # a failed command leaves its error, not a bar
        self.bar.__exit__(exc_type, *exc)
        return False

    def phase(self, name: str, total: float | None = None) -> None:
        """Start a phase: the bar restarts (pulsing when `total` is None)."""
        self.name = name
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.title}: {name}", total=total, completed=0, simt="", rate="")

    def step(self, what: str) -> None:
        """Name the step within the current phase (e.g. compile: routes)."""
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.title}: {self.name}: {what}")

    def update(self, **fields) -> None:
        if self.bar is not None:
            self.bar.update(self.task, **fields)

    def close(self) -> None:
        """Stop the live display (before printing the summary table under it)."""
        if self.bar is not None:
            self.bar.stop()


def _import_table_writer() -> None:
    # What writing the results imports: pyarrow for the tables, json and tempfile for
    # summary.json. (Not numpy.ma: the summary's percentiles no longer call
    # np.percentile, which imported it.)
    import json  # noqa: F401
    import tempfile  # noqa: F401

    import pyarrow.parquet  # noqa: F401


def _run_to_outdir(sim, outdir: Path, until_ps, writer, phases: _Phases) -> None:
    """Run `sim` as `run` does: progress bar, a stop signal stops at a safe point, then
    the trace (closed complete=false after an interruption), OUTDIR/flows.parquet,
    qps.parquet, ports.parquet and, last, summary.json."""
    horizon = until_ps or sim.scenario.run.until_ps
    t0 = time.perf_counter()
    interrupted = False
    phases.phase("run", total=horizon or None)
    stop = _StopRequest()

    def progress(now, _h, events):
        # The bar advances with the engine's clock (`now`, against the horizon) but names
        # the time of the last frame event (`sim_time_ps`): trailing timers (a RoCE
        # retransmission timer armed for seconds) move `now`, not what the run did.
        el = time.perf_counter() - t0
        phases.update(completed=now if horizon else None, simt=f"sim {units.fmt_time(sim.engine.active_ps)}",
                      rate=f"{events / el / 1e6:.1f} M events/s" if el > 0 else "")
        stop.check()

    def sink(recs):
        writer.write(recs)
        stop.check()

    # NOTE: what writing the results imports (pyarrow, about 35 ms) loads on a second
    # thread while the engine runs without the GIL. It starts here, just before the
    # engine, not earlier: started free, it took the GIL into pyarrow's import (one C
    # call, loading its libraries, holds it for milliseconds) and the compile before the
    # engine waited up to 20 ms for it.
    preload = threading.Thread(target=_import_table_writer, name="ethlink-preload", daemon=True)
    preload.start()
    try:
        with stop:
            result = sim.run(until_ps, progress=progress, trace_sink=sink if writer else None)
    except KeyboardInterrupt:
        interrupted = True
        from .sim import Result
        result = Result(sim, sim.wall_s, "interrupted")
    except BaseException as exc:
        _abandon(writer, exc)
        raise
    preload.join()
    phases.update(completed=horizon or 1, total=horizon or 1)
    n_files = 4 + (writer is not None)
    phases.phase("write", total=n_files)
    # the bar's last line keeps the run's simulated time, the table's
    phases.update(simt=f"sim {units.fmt_time(result.summary['sim_time_ps'])}")
    trace_path = None
    if writer is not None:
        phases.step("trace.arrow")
        trace_path = writer.close(not interrupted, stop.reason if interrupted else "")
        phases.update(advance=1)

    def on_table(name):
        phases.step(f"{name}.parquet")
        phases.update(completed=n_files - 4 + ("flows", "qps", "ports").index(name))

    tables = result.write_tables(outdir, on_table=on_table)
    phases.step("summary.json")
    phases.update(completed=n_files - 1)
    summary = _clean_nan(result.summary)
    write_json_atomic(outdir / "summary.json", summary)
    phases.update(completed=n_files)
    phases.close()
    if not phases.quiet:
        _print_summary(summary)
    _print_warnings(summary)
    _say(f"wrote {outdir / 'summary.json'} and {', '.join(p.name for p in tables)}")
    if trace_path is not None:
        _say(f"wrote {trace_path} ({writer.rows:,} rows, {trace_path.stat().st_size / 1e6:.1f} MB"
             f"{', complete=false' if interrupted else ''})")
    if interrupted:
        console.print(f"[yellow]{stop.reason}: summary.json and the tables hold the results so far[/]")
        sys.exit(stop.exit_code)
    _mark_outputs_closed()


@main.command("replay")
@click.argument("workload_file", metavar="WORKLOAD", type=click.Path(path_type=Path))
@click.option("--fabric", required=True, metavar="SCENARIO",
              help="The fabric: a built-in scenario name or a TOML file (its own traffic is replaced).")
@click.option("-o", "--out", "outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory (created): summary.json and, when tracing, trace.arrow.")
@click.option("--seed", type=int, default=None, help="Override the fabric scenario's seed.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a fabric scenario field.")
@click.option("--until", default=None, metavar="TIME", help='Stop at this simulated time, e.g. "2ms".')
@click.option("--trace", type=click.Choice(["off", "endpoints", "hop"]), default=None,
              help="Trace level (default: the fabric scenario's run.trace).")
@click.option("--trace-compression", type=click.Choice(TRACE_COMPRESSIONS), default=TRACE_DEFAULT_COMPRESSION,
              show_default=True, help="Compression of the trace's record batches.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def replay_cmd(workload_file, fabric, outdir, seed, sets, until, trace, trace_compression, quiet):
    """Run the operations of WORKLOAD (Arrow, Parquet or CSV table, or a trace.arrow)
    on the fabric of a scenario; writes what `run` writes."""
    from .replay import load_fabric, load_workload, replay_metadata, replay_simulation
    from .trace import TraceError, TraceWriter

    overrides = list(sets) + ([f"seed={seed}"] if seed is not None else [])
    try:
        sc = load_fabric(fabric, overrides)
    except ScenarioError as exc:
        raise click.UsageError(f"fabric {fabric}: {exc}") from None
    try:
        wl = load_workload(workload_file)
    except (TraceError, ScenarioError) as exc:
        raise BadInput(str(exc)) from None
    until_ps = _until_ps(until)
    with _Phases(f"{sc.name} <- {Path(workload_file).name}", quiet) as phases:
        phases.phase("compile")
        try:
            sim = replay_simulation(wl, sc, trace=trace, on_step=phases.step)
        except (ScenarioError, TopologyError) as exc:
            raise BadInput(f"{workload_file} on {fabric}: {exc}") from None
        writer = None
        with _new_outdir(outdir):
            if sim.trace_level != "off":
                writer = TraceWriter(outdir / "trace.arrow", replay_metadata(sim, wl),
                                     compression=trace_compression, engine=sim.engine)
        if writer is None:
            for p in (outdir / "trace.arrow", outdir / "trace.arrow.partial"):
                if p.exists():
                    p.unlink()
                    console.print(f"removed {p}: an earlier run's trace (this run does not trace)")
        with _writing(outdir):
            _run_to_outdir(sim, outdir, until_ps, writer, phases)


@main.command("workload")
@click.argument("trace_file", metavar="TRACE", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Workload file to write: .arrow, .parquet or .csv.")
def workload_cmd(trace_file, out):
    """Extract the operations a traced run posted, as a workload table for `replay`."""
    from .replay import workload_from_trace, write_workload
    from .trace import TraceError

    if out.suffix.lower() not in (".arrow", ".feather", ".ipc", ".parquet", ".pq", ".csv"):
        raise BadInput(f"{out}: choose the format by suffix: .arrow, .parquet or .csv")
    try:
        wl = workload_from_trace(trace_file)
    except (TraceError, ScenarioError) as exc:
        raise BadInput(str(exc)) from None
    with _writing(out):
        write_workload(wl, out)
    deps = int((wl["dep"].to_numpy() >= 0).sum())
    console.print(f"wrote {out} ({wl.num_rows:,} operations, {deps:,} with dependencies)")


@main.command("plot")
@click.argument("trace_file", metavar="TRACE", type=click.Path(path_type=Path))
@click.option("-o", "--out", "outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for the PNGs (created).")
@click.option("--summary", "summary_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="summary.json of the run (default: the one beside TRACE, if any).")
@click.option("--top", type=click.IntRange(min=1), default=6, show_default=True,
              help="How many ports (and flows) to draw in the per-port/per-flow plots.")
@click.option("--bins", type=click.IntRange(min=2), default=100, show_default=True,
              help="Time bins for throughput.")
def plot_cmd(trace_file, outdir, summary_file, top, bins):
    """Write PNGs of a trace: queue depth, per-flow throughput, pause timeline,
    completion-time CDF and, with Load/Store rows, the Load/Store latency CDF; prints
    where they are."""
    from . import plots
    from .trace import TraceError

    _, info = _open_trace(trace_file)
    _incomplete_note(info, trace_file)
    try:
        with _writing(outdir):
            paths = plots.plot_all(trace_file, outdir, summary=summary_file, top=top, bins=bins)
    except (TraceError, ScenarioError) as exc:
        raise BadInput(str(exc)) from None
    for p in paths:
        click.echo(str(p))


# ---------------------------------------------------------------------------------------
# Parameter sweeps.

@main.command("sweep")
@click.argument("scenario")
@click.option("-o", "--out", "outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory (created): a folder per point, sweep.csv, sweep.parquet, traces/.")
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2,...",
              help="A swept field and its values, repeatable (points: the cartesian product). Values are "
                   "split at commas outside brackets and quotes and each is read as --set reads it: "
                   "--grid topology.hosts=8,16 --grid ls.header=ethlink,roce --grid loadstore.0.sizes=[64],[256].")
@click.option("--seeds", default=None, metavar="S1,S2,...",
              help="Run every grid point with each of these seeds (default: the scenario's seed).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a field at every point, e.g. --set workload.0.size=64KiB.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: the number of CPUs); ignored with --scheduler.")
@click.option("--metric", "metrics", multiple=True, metavar="KEY",
              help="A dotted key into summary.json for sweep.csv, repeatable or comma-separated "
                   "(e.g. ls.p99_ps,fct_ps.max,drops); default: a standard set.")
@click.option("--until", default=None, metavar="TIME", help='Stop every point at this simulated time, e.g. "2ms".')
@click.option("--trace", type=click.Choice(["off", "endpoints", "hop"]), default=None,
              help="Trace level of every point (default: the scenario's run.trace); not off writes each "
                   "point's trace.arrow and the partitioned dataset OUTDIR/traces/.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run the points on this Dask distributed scheduler (e.g. tcp://10.0.0.5:8786) instead "
                   "of local processes; needs pip install 'ethlink[sweep]'.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def sweep_cmd(scenario, outdir, grid, seeds, sets, jobs, metrics, until, trace, scheduler, quiet):
    """Run SCENARIO at every point of a grid of overrides, in parallel; writes
    OUTDIR/<point>/summary.json per point and OUTDIR/sweep.csv + sweep.parquet."""
    from . import sweep as S

    try:
        parsed: dict = {}
        for item in grid:
            key, values = S.parse_grid_item(item)
            if key in parsed:
                raise S.SweepError(f"--grid {key} is given twice; list all its values in one --grid")
            parsed[key] = values
        seed_list = None
        if seeds is not None:
            seed_list = [S.parse_value(v) for v in S.split_values(seeds)]
        metric_list = [m.strip() for item in metrics for m in item.split(",")] or None
        until_ps = _until_ps(until)
        points = S.plan(scenario, parsed, seeds=seed_list, sets=sets)
        metric_list = S.check_metrics(metric_list or S.DEFAULT_METRICS)
        if scheduler:
            S.require_dask()
    except S.SweepError as exc:
        raise click.UsageError(str(exc)) from None
    except ScenarioError as exc:
        raise click.UsageError(f"scenario {scenario}: {exc}") from None
    where = f"Dask scheduler {scheduler}" if scheduler else \
        f"{min(jobs or S._cpus(), len(points))} local process(es)"
    console.print(f"sweep {points[0].scenario_name}: {len(points)} point(s) on {where}")
    failed: list[str] = []
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=console.get(), disable=quiet) as bar:
        task = bar.add_task(f"sweep {points[0].scenario_name}", total=len(points), last="")

        def on_point(point, r):
            if r["error"]:
                failed.append(point.name)
                console.print(f"[red]point {point.name} failed: {r['error']}[/]")
            bar.update(task, advance=1, last=point.name)

        try:
            with _writing(outdir), _signals_interrupt() as stop:
                table = S.sweep(scenario, outdir, parsed, seeds=seed_list, sets=sets, jobs=jobs,
                                metrics=metric_list, trace=trace, until_ps=until_ps, scheduler=scheduler,
                                points=points, on_point=on_point)
        except S.SweepError as exc:
            raise click.UsageError(str(exc)) from None
        except S.SweepFailed as exc:
            table = exc.table               # the failed points were reported as they came
        except KeyboardInterrupt:
            bar.stop()
            name = signal.Signals(stop["signum"]).name
            console.print(f"[yellow]interrupted ({name}): the finished points' files are complete; "
                          f"{outdir / 'sweep.csv'} lists them[/]")
            sys.exit(128 + stop["signum"])
    if not quiet:
        _print_sweep(table, list(parsed), metric_list, scenario)
    console.print(f"wrote {outdir / 'sweep.csv'}, {outdir / 'sweep.parquet'} ({table.num_rows} points)")
    if (outdir / "traces").exists():
        console.print(f"wrote {outdir / 'traces'}/ (Parquet dataset, partitioned by point)")
    if failed:
        console.print(f"[red]{len(failed)} point(s) failed; see the error column of sweep.csv[/]")
        sys.exit(1)


def _print_sweep(table, keys, metrics, scenario) -> None:
    from .sweep import fmt_metric

    t = _rich_table(title=f"sweep of {scenario}: {table.num_rows} points")
    rows = table.to_pylist()
    # metrics that are empty or 0 at every point are left out here (sweep.csv has them)
    shown = [m for m in metrics if m in table.column_names and any(r[m] not in (None, 0) for r in rows)]
    hidden = [m for m in metrics if m in table.column_names and m not in shown]
    for c in ["point", *keys, "seed", *shown]:
        t.add_column(c, justify="left" if c in keys else "right", overflow="fold")
    for r in rows:
        t.add_row(str(r["point"]), *(str(r[k]) for k in keys), str(r["seed"]),
                  *(fmt_metric(m, r[m]) for m in shown))
    _stdout_print(t)
    if hidden:
        _stdout_print(f"0 or empty at every point (in sweep.csv, not shown): {', '.join(hidden)}")


# Set by _run_to_outdir once every output of a run is written and closed: `entry` may then
# end the process without the interpreter's teardown.
_outputs_closed = False


def _mark_outputs_closed() -> None:
    global _outputs_closed
    _outputs_closed = True


def entry() -> None:
    """The `ethlink` command (called by ethlink/__main__.py, the console script's
    target): `main`, then, after a `run` or `replay` that wrote and closed all its
    outputs and exits 0, the process ends at once (stdout and stderr flushed). Any other
    command, status or failure exits as Python does.

    NOTE: Python's teardown after a run frees every object of numpy, pyarrow and the
    run's results one by one and runs pyarrow's exit handlers: about 27 ms of the 127:1
    incast's 0.22 s whole process (benchmarks/README.md, start-up session 5), for
    nothing a finished run needs. `python -m ethlink.cli` and in-process callers of
    `main` (tests, CliRunner) keep the ordinary exit."""
    try:
        main()
    except SystemExit as exc:
        if not _outputs_closed or exc.code not in (None, 0):
            raise
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            raise exc from None             # Python's own exit reports the failed flush
        os._exit(0)


if __name__ == "__main__":
    main()
