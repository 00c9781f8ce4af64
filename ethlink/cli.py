"""The `ethlink` command line.

    ethlink list                                   built-in scenarios
    ethlink run SCENARIO -o OUTDIR [--seed N] [--set key=value ...] [--until T] [--trace LEVEL]

SCENARIO is a built-in name (see `ethlink list`) or a path to a TOML file. A run shows a
progress bar (simulated time against the horizon, events/s), prints a summary table and
writes OUTDIR/summary.json (keys documented in README.md). Scenario errors are reported
before anything runs, naming the field; the exit status is 2 for bad input.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import scenarios, units
from .scenario import ScenarioError
from .topology import TopologyError

console = Console(stderr=True)


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False, default=_json_default)
            f.write("\n")
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ethlink")
def main():
    """ethlink: packet-level emulation of GPU interconnect over Ethernet.

    Describe a fabric and a workload in TOML (or pick a built-in scenario), run it packet
    by packet and get completion times, drops, queue depths and a summary.json.
    """


@main.command("list")
def list_cmd():
    """List the built-in scenarios with their descriptions."""
    t = Table(title="built-in scenarios", show_lines=False)
    t.add_column("name", style="bold")
    t.add_column("description")
    for n in scenarios.names():
        t.add_row(n, scenarios.describe(n))
    Console().print(t)


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
              required=True, help="Output directory (created); summary.json is written there.")
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a scenario field, e.g. --set topology.hosts=16 --set workload.0.size=2MiB.")
@click.option("--until", default=None, metavar="TIME",
              help='Stop at this simulated time, e.g. "2ms" (default: the scenario\'s run.until, else until idle).')
@click.option("--trace", type=click.Choice(["off", "endpoints", "hop"]), default=None,
              help="Trace level (default: the scenario's run.trace).")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def run_cmd(scenario, outdir, seed, sets, until, trace, quiet):
    """Run SCENARIO (a built-in name or a TOML file) and write OUTDIR/summary.json."""
    from .sim import Simulation

    sc = load_scenario(scenario, seed, sets)
    try:
        until_ps = units.time_ps(until) if until is not None else None
    except units.UnitError as exc:
        raise click.BadParameter(str(exc), param_hint="--until") from None
    try:
        sim = Simulation(sc, trace=trace)
    except (ScenarioError, TopologyError) as exc:
        raise click.UsageError(f"scenario {scenario}: {exc}") from None
    horizon = until_ps or sc.run.until_ps
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    interrupted = False
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.fields[simt]}"), TextColumn("{task.fields[rate]}"),
                  TimeElapsedColumn(), console=console, disable=quiet, transient=False) as bar:
        task = bar.add_task(sc.name, total=horizon or None, simt="", rate="")

        def progress(now, _h, events):
            el = time.perf_counter() - t0
            bar.update(task, completed=now if horizon else None,
                       simt=f"sim {units.fmt_time(now)}",
                       rate=f"{events / el / 1e6:.1f} M events/s" if el > 0 else "")

        try:
            result = sim.run(until_ps, progress=progress)
        except KeyboardInterrupt:
            interrupted = True
            from .sim import Result
            result = Result(sim, sim.wall_s, "interrupted")
        bar.update(task, completed=horizon or 1, total=horizon or 1)
    summary = _clean_nan(result.summary)
    write_json_atomic(outdir / "summary.json", summary)
    if not quiet:
        _print_summary(summary)
    console.print(f"wrote {outdir / 'summary.json'}")
    if interrupted:
        console.print("[yellow]interrupted: summary.json holds the results so far[/]")
        sys.exit(130)


def _print_summary(s: dict) -> None:
    t = Table(title=f"{s['scenario']} (seed {s['seed']})", show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("simulated time", units.fmt_time(s["sim_time_ps"]))
    t.add_row("events", f"{s['events']:,}  ({(s['events_per_s'] or 0) / 1e6:.1f} M/s, wall {s['wall_s']:.2f} s)")
    t.add_row("flows completed", f"{s['flows_completed']:,} / {s['flows_total']:,}")
    t.add_row("bytes sent / delivered", f"{s['bytes_sent']:,} / {s['bytes_delivered']:,}")
    t.add_row("goodput", units.fmt_rate(s["goodput_bps"]))
    drops = s["drops"]
    t.add_row("drops", ", ".join(f"{k} {v:,}" for k, v in drops.items()) if drops else "0")
    if s["fct_ps"]:
        f = s["fct_ps"]
        t.add_row("FCT p50 / p99 / max", " / ".join(units.fmt_time(int(f[k])) for k in ("p50", "p99", "max")))
        sd = s["slowdown"]
        t.add_row("slowdown p50 / p99 / max", " / ".join(f"{sd[k]:.2f}" for k in ("p50", "p99", "max")))
    Console().print(t)


if __name__ == "__main__":
    main()
