"""The `ethlink` command line: help, list, run (summary.json keys), bad input exits 2 naming
the field, and every built-in scenario run as a smoke test, scaled down with --set."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import ethlink
from ethlink import scenarios, units
from ethlink.cli import main

REQUIRED_KEYS = {"events", "sim_time_ps", "wall_s", "bytes_sent", "bytes_delivered", "drops", "flows_total"}
TABLES = ("flows", "qps", "ports")
FLOW_KEYS = {"id", "src", "dst", "bytes", "start_ps", "finish_ps", "fct_ps", "ideal_fct_ps", "slowdown"}
ETHLINK = Path(sys.executable).with_name("ethlink")


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def rows(out, name):
    """OUTDIR/<name>.parquet as a list of row dicts."""
    return pq.read_table(out / f"{name}.parquet").to_pylist()


def test_help_lists_commands():
    r = invoke("--help")
    assert r.exit_code == 0
    assert "run" in r.output and "list" in r.output
    r = invoke("run", "--help")
    assert r.exit_code == 0
    for opt in ("--out", "--seed", "--set", "--until", "--trace", "--quiet"):
        assert opt in r.output


def test_list_names_builtins():
    r = invoke("list")
    assert r.exit_code == 0
    for name in ("incast-raw", "permutation-leafspine", "alltoall-fattree"):
        assert name in r.output


def test_run_writes_summary_with_required_keys(tmp_path):
    out = tmp_path / "o"
    r = invoke("run", "incast-raw", "-o", str(out), "--set", "workload.0.size=64KiB", "--quiet")
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert REQUIRED_KEYS <= set(s)
    assert isinstance(s["drops"], dict)
    assert not set(TABLES) & set(s)                      # per-row results are Parquet files
    flows = rows(out, "flows")
    assert len(flows) == 64
    for f in flows:
        assert FLOW_KEYS <= set(f)
        assert f["dst"] == 0 and f["bytes"] == 64 * 1024
    assert s["bytes_sent"] == 64 * 64 * 1024
    assert s["bytes_delivered"] + s["bytes_dropped"] == s["bytes_sent"]
    assert s["events"] > 0 and s["sim_time_ps"] > 0 and s["wall_s"] > 0
    done = [f for f in flows if f["finish_ps"] is not None]
    assert all(f["fct_ps"] == f["finish_ps"] - f["start_ps"] for f in done)
    undone = [f for f in flows if f["finish_ps"] is None]
    assert all(f["fct_ps"] is None and f["slowdown"] is None for f in undone)
    assert s["flows_completed"] == len(done)


def test_run_prints_table_unless_quiet(tmp_path):
    r = invoke("run", "incast-raw", "-o", str(tmp_path / "a"), "--set", "workload.0.size=16KiB",
               "--set", "workload.0.senders=4")
    assert r.exit_code == 0, r.output
    assert "flows completed" in r.output and "summary.json" in r.output


def test_seed_option_and_until(tmp_path):
    out = tmp_path / "o"
    r = invoke("run", "incast-raw", "-o", str(out), "--set", "workload.0.size=64KiB",
               "--seed", "7", "--until", "1us", "--quiet")
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["seed"] == 7
    assert s["stop"] == "until" and s["sim_time_ps"] <= 10**6


@pytest.mark.parametrize("args,needle", [
    (["--set", "topology.rate=400X"], "topology.rate"),
    (["--set", "topology.hosts"], "expected key=value"),
    (["--set", "workload.3.size=1"], "index 3 out of range"),
    (["--set", "switch.bufer=1MiB"], "switch.bufer"),
    (["--set", "workload.0.senders=65"], "workload[0].senders"),
    (["--until", "soon"], "--until"),
])
def test_bad_input_exits_2_naming_the_field(tmp_path, args, needle):
    r = CliRunner().invoke(main, ["run", "incast-raw", "-o", str(tmp_path / "o"), "--quiet", *args])
    assert r.exit_code == 2
    assert needle in r.output
    assert not (tmp_path / "o" / "summary.json").exists()


def test_unknown_scenario_exits_2(tmp_path):
    r = CliRunner().invoke(main, ["run", "no-such", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no built-in scenario" in r.output


def test_run_a_toml_file(tmp_path):
    p = tmp_path / "two.toml"
    p.write_text('name = "two"\n[topology]\nkind = "star"\nhosts = 2\n'
                 '[[flow]]\nsrc = "h0"\ndst = "h1"\nsize = 100\n')
    r = invoke("run", str(p), "-o", str(tmp_path / "o"), "--quiet")
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["scenario"] == "two"
    assert rows(tmp_path / "o", "flows")[0]["slowdown"] == 1.0


# Issue-2 built-ins (raw Ethernet) with the --set that scales each down; any other
# built-in scenario is smoke-tested as shipped.
SMOKE = {
    "incast-raw": ["workload.0.size=64KiB"],
    "permutation-leafspine": ["topology.leaves=4", "topology.hosts_per_leaf=8", "workload.0.size=256KiB"],
    "alltoall-fattree": ["topology.k=4", "workload.0.size=16KiB"],
}


def test_the_issue_builtins_exist():
    assert set(SMOKE) <= set(scenarios.names())


@pytest.mark.parametrize("name", scenarios.names())
def test_builtin_smoke(tmp_path, name):
    """Every built-in scenario (scaled down where listed) through the installed console
    script; the raw-Ethernet ones must also conserve bytes."""
    out = tmp_path / name
    sets = [a for s in SMOKE.get(name, []) for a in ("--set", s)]
    env = dict(os.environ, COLUMNS="120")
    p = subprocess.run([str(ETHLINK), "run", name, "-o", str(out), "--quiet", *sets],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    s = json.loads((out / "summary.json").read_text())
    assert REQUIRED_KEYS <= set(s)
    assert s["flows_total"] == len(rows(out, "flows"))
    assert len(json.dumps(s)) < 1_000_000
    if name in SMOKE:
        assert s["flows_total"] > 0
        assert s["stop"] == "empty"
        assert s["bytes_delivered"] + s["bytes_dropped"] == s["bytes_sent"]
        assert s["packets_in_flight"] == 0


def test_every_summary_key_is_documented(tmp_path):
    """Every summary.json key is documented (README or docs/, where the reference moved):
    each top-level key and each column of ports.parquet, flows.parquet and qps.parquet must
    appear there in backquotes."""
    root = Path(__file__).resolve().parents[1]
    readme = "\n".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    out = tmp_path / "o"
    r = invoke("run", "fairness-dcqcn", "-o", str(out), "--until", "100us", "--quiet")
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    keys = set(s).union(*(pq.read_schema(out / f"{t}.parquet").names for t in TABLES))
    assert "rate_series_bps" in keys
    missing = sorted(k for k in keys if f"`{k}`" not in readme)
    assert not missing, f"summary.json keys not documented in README.md or docs/: {missing}"


def test_progress_names_every_phase(tmp_path, monkeypatch):
    """The progress display goes through compile (each step), run and write (each file),
    in that order, with a Ctrl-C-free run."""
    from ethlink import cli

    seen = []
    monkeypatch.setattr(cli._Phases, "phase", lambda self, name, total=None: seen.append(name))
    monkeypatch.setattr(cli._Phases, "step", lambda self, what: seen.append(f"{seen_phase(seen)}: {what}"))
    r = invoke("run", "incast-raw", "-o", str(tmp_path / "o"), "--set", "workload.0.size=16KiB", "--trace", "endpoints")
    assert r.exit_code == 0, r.output
    assert seen == ["compile", "compile: fabric", "compile: routes", "compile: ports", "compile: flows",
                    "compile: ideal FCTs", "compile: QPs", "compile: engine", "run", "write", "write: trace.arrow",
                    "write: flows.parquet", "write: qps.parquet", "write: ports.parquet", "write: summary.json"]


def seen_phase(seen):
    """The last phase started in a list of phase and step names."""
    return next(s for s in reversed(seen) if ":" not in s)


def test_the_bar_and_the_table_show_one_clock(tmp_path, monkeypatch):
    """ls-idle's Load/Store timeout timers run the engine's clock on to 30 us after the
    last frame (10.5 us): every `sim` the bar shows, and the table's simulated time, are
    the last frame's time (summary.json's sim_time_ps), not the engine's clock."""
    from ethlink import cli

    shown = []
    real = cli._Phases.update

    def update(self, **fields):
        if fields.get("simt"):
            shown.append(fields["simt"])
        real(self, **fields)

    monkeypatch.setattr(cli._Phases, "update", update)
    r = invoke("run", "ls-idle", "-o", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    sim = ethlink.Simulation(scenarios.load("ls-idle", []), trace="off")
    sim.run()
    assert sim.engine.now > sim.engine.active_ps == s["sim_time_ps"]          # timers trail the last frame
    assert shown and set(shown) == {f"sim {units.fmt_time(s['sim_time_ps'])}"}
    assert re.search(rf"simulated time \(last frame\)\s*│\s*{re.escape(units.fmt_time(s['sim_time_ps']))}", r.output)


def test_the_table_has_a_load_store_line_beside_the_completion_times(tmp_path):
    r = invoke("run", "ls-under-rdma", "-o", str(tmp_path / "o"), "--set", "topology.leaves=2",
               "--set", 'workload.0.size="64KiB"', "--set", "loadstore.0.ops=100")
    assert r.exit_code == 0, r.output
    ls = json.loads((tmp_path / "o" / "summary.json").read_text())["ls"]
    lines = r.output.splitlines()
    fct = next(i for i, ln in enumerate(lines) if "FCT p50 / p99 / max" in ln)
    ops = next(i for i, ln in enumerate(lines) if "Load/Store ops completed" in ln)
    lat = next(i for i, ln in enumerate(lines) if "Load/Store p50 / p99 / max" in ln)
    assert fct < ops < lat
    assert f"{ls['count']:,} / {ls['total']:,}" in lines[ops] and f"{ls['ops_per_s'] / 1e6:,.0f} M ops/s" in lines[ops]
    assert " / ".join(units.fmt_time(ls[k]) for k in ("p50_ps", "p99_ps", "max_ps")) in lines[lat]


def test_no_load_store_line_without_load_store(tmp_path):
    r = invoke("run", "incast-raw", "-o", str(tmp_path / "o"), "--set", "workload.0.senders=4")
    assert r.exit_code == 0 and "Load/Store" not in r.output
