"""The documentation: README (the front door) and docs/ (the references, an mkdocs site).

- the site builds with `mkdocs build --strict` (no broken page link, no page left out of
  the nav);
- every scenario key the validator reads is documented, in backquotes, in README or docs/
  (the keys are collected from the validator itself, so a new key without docs fails);
- every `ethlink ...` command written in README or docs/ (code blocks and backquoted
  spans, placeholders such as SCENARIO or OUTDIR left out) parses: its command, options
  and option values are accepted, built-in scenario names exist; every `ethlink run` of a
  built-in also runs (to 5 us of simulated time, in a scratch directory).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ethlink import scenario as S
from ethlink import scenarios
from ethlink.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = "\n".join(p.read_text() for p in PAGES)


def test_the_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                        "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "site" / "scenarios" / "index.html").exists()


def scenario_keys() -> set[tuple[str, str]]:
    """(section, key) for every key the validator reads, from a scenario that has every
    section, sub-table and workload kind (a key is read even when absent: its default)."""
    seen: set[tuple[str, str]] = set()
    done = S._Section.done

    def record(self):
        for k in self.used:
            seen.add((re.sub(r"\[\d+\]", "", self.where), k))
        return done(self)

    data = {"topology": {"kind": "leaf-spine"}, "switch": {"tiers": {"spine": {}}}, "host": {}, "ports": {},
            "run": {}, "pfc": {"watchdog": {}}, "ecn": {}, "roce": {}, "dcqcn": {}, "hpcc": {"enabled": False}, "ls": {}, "cbfc": {"priorities": [2]},
            "link": {},
            "flow": [{"src": 0, "dst": 1, "size": 64}],
            "workload": [{"kind": "incast", "size": 64}, {"kind": "permutation", "size": 64}],
            "loadstore": [{"ops": 1}], "ls_op": [{"src": 0, "dst": 1}]}
    S._Section.done = record
    try:
        S.Scenario.from_dict(data)
    finally:
        S._Section.done = done
    return seen


def test_every_scenario_key_is_documented():
    keys = scenario_keys()
    assert ("pfc", "headroom_pool") in keys and ("roce", "timeout") in keys and ("pfc.watchdog", "action") in keys
    def documented(where, k):         # a key in backquotes, or a table header: [dcqcn], [[flow]], [switch.tiers.
        full = f"{where}.{k}" if where else k
        return any(s in TEXT for s in (f"`{k}`", f"[{full}]", f"[[{full}]]", f"[{full}."))

    missing = sorted(f"{where}.{k}" if where else k for where, k in keys if not documented(where, k))
    assert not missing, f"scenario keys not documented in README.md or docs/: {missing}"


def documented_commands() -> list[str]:
    cmds = set()
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", TEXT, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            line = re.sub(r"^(\.venv/bin/)", "", line)
            if line.startswith("ethlink "):
                cmds.add(line)
    for span in re.findall(r"`(ethlink [^`]+)`", TEXT):
        cmds.add(span.strip())
    placeholder = re.compile(r"\b[A-Z][A-Z_0-9]{2,}\b|\.\.\.|\||<|\[")
    # a bare command name in prose (`ethlink pcap`) is a name, not a command line
    return sorted(c for c in cmds if not placeholder.search(c) and (len(c.split()) > 2 or c.split()[-1] == "list"))


COMMANDS = documented_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 15, COMMANDS


@pytest.mark.parametrize("line", COMMANDS)
def test_every_documented_command_parses(line, tmp_path, monkeypatch):
    args = shlex.split(line)[1:]
    name, rest = args[0], args[1:]
    ctx = click.Context(main, info_name="ethlink")
    cmd = main.get_command(ctx, name)
    assert cmd is not None, f"{line}: no command {name!r}"
    sub = cmd.make_context(name, list(rest), parent=ctx)
    scenario = sub.params.get("scenario")
    if scenario and not scenario.endswith(".toml"):
        assert scenario in scenarios.names(), f"{line}: no built-in scenario {scenario!r}"
    if name == "run" and scenario in scenarios.names():
        monkeypatch.chdir(tmp_path)
        from click.testing import CliRunner
        r = CliRunner().invoke(main, [*args, "--until", "5us", "--quiet"], catch_exceptions=False)
        assert r.exit_code == 0, f"{line}\n{r.output}"
