"""ethlink.plots and `ethlink plot`: the PNGs exist and are images, and what is drawn is
the analysis data (checked on the matplotlib figures before they are closed), with axes
labelled in units."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib import image

import ethlink
from ethlink import analysis as A
from ethlink import plots as P
from ethlink.cli import main

from ethlink import scenarios
from test_analysis import LS_RUNS, SCENARIOS, rows_of, run_res, run_to


@pytest.fixture(scope="module")
def pfc(tmp_path_factory):
    return run_to(tmp_path_factory.mktemp("pfc"), ethlink.Scenario.from_dict(SCENARIOS["pfc"]), "hop")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return run_to(tmp_path_factory.mktemp("raw"), ethlink.Scenario.from_dict(SCENARIOS["raw"]), "hop")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Load/Store and RDMA on one small pod (test_analysis's "mixed" run)."""
    scenario, sets, level = LS_RUNS["mixed"]
    path, s, _ = run_res(tmp_path_factory.mktemp("mixed"), scenarios.load(scenario, sets), level)
    return path, s


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions make, kept open for inspection."""
    kept = []
    monkeypatch.setattr(P.plt, "close", lambda fig: kept.append(fig))
    yield kept
    monkeypatch.undo()
    P.plt.close("all")


def test_plot_all_writes_four_pngs(pfc, tmp_path, figures):
    path, s = pfc
    paths = P.plot_all(path, tmp_path / "plots")
    assert [p.name for p in paths] == ["queue_depth.png", "flow_throughput.png", "pause_timeline.png", "fct_cdf.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = image.imread(p)
        assert img.shape[0] >= 250 and img.shape[1] >= 900
        assert img[..., :3].std() > 0.05          # not a blank canvas
    q, thr, pause, cdf = (f.axes for f in figures)
    assert q[0].get_xlabel() == "time (us)" and q[0].get_ylabel() == "queue depth (KiB)"
    assert thr[0].get_ylabel().startswith("throughput (Gb/s")
    assert pause[0].get_xlabel() == "time (us)"
    assert cdf[0].get_xlabel() == "flow completion time (us)" and cdf[1].get_xlabel() == "slowdown (FCT / ideal)"


def test_queue_depth_plot_draws_the_deepest_queues(pfc, tmp_path, figures):
    path, s = pfc
    P.plot_queue_depth(path, tmp_path / "q.png", top=3)
    ax = figures[0].axes[0]
    lines = ax.get_lines()
    top = A.top_queues(path, n=3)
    assert len(lines) == 3
    assert [ln.get_label() for ln in lines] == [f"{n} prio {p}" for n, p in zip(top["name"].to_pylist(),
                                                                                 top["prio"].to_pylist())]
    assert max(lines[0].get_ydata()) * 1024 == top["max_qbytes"][0].as_py() == max(
        max(p["queue_hwm_bytes"]) for p in rows_of(path, "ports"))
    assert max(lines[0].get_xdata()) == s["sim_time_ps"] / 1e6


def test_pause_timeline_draws_every_interval(pfc, raw, tmp_path, figures):
    path, s = pfc
    P.plot_pause_timeline(path, tmp_path / "p.png")
    ax = figures[0].axes[0]
    iv = A.pause_intervals(path)
    bars = [b for coll in ax.collections for b in coll.get_paths()]
    assert len(bars) == iv.num_rows > 0
    widths = sorted(round(float(np.ptp(b.vertices[:, 0])) * 1e6) for b in bars)
    assert widths == sorted((iv["end_ps"].to_numpy() - iv["start_ps"].to_numpy()).tolist())
    P.plot_pause_timeline(raw[0], tmp_path / "none.png")
    assert "no PFC pause" in figures[1].axes[0].texts[0].get_text()


def test_fct_cdf_steps_through_every_completed_flow(raw, tmp_path, figures):
    path, s = raw
    P.plot_fct_cdf(path, tmp_path / "c.png")
    ax = figures[0].axes[0]
    y = ax.get_lines()[0].get_ydata()
    assert y[-1] == 1.0 and len(y) == s["flows_completed"] + 1
    assert f"{s['flows_completed']} of {s['flows_total']} flows completed" in figures[0]._suptitle.get_text()


def test_cli_plot_prints_paths(pfc, tmp_path):
    path, _ = pfc
    r = CliRunner().invoke(main, ["plot", str(path), "-o", str(tmp_path / "png"), "--top", "2"])
    assert r.exit_code == 0, r.output
    printed = r.output.split()
    assert printed == [str(tmp_path / "png" / n) for n in
                       ("queue_depth.png", "flow_throughput.png", "pause_timeline.png", "fct_cdf.png")]
    r = CliRunner().invoke(main, ["plot", str(tmp_path / "missing.arrow"), "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no such trace file" in r.output


def test_ls_latency_cdf_per_kind_and_per_class_beside_the_messages(mixed, tmp_path, figures):
    """A trace with Load/Store operations gets a fifth plot: one CDF per kind whose steps
    are the completed operations of that kind, and per traffic class the Load/Store
    latency beside the message completion times."""
    path, s = mixed
    paths = P.plot_all(path, tmp_path / "plots")
    assert [p.name for p in paths][-1] == "ls_latency_cdf.png"
    assert image.imread(paths[-1])[..., :3].std() > 0.05
    fig = figures[-1]
    per_kind, per_class = fig.axes
    ops = A.ls_ops(path)
    kinds = [r["kind"] for r in A.ls_latency(ops).to_pylist() if r["kind"] != "all"]
    lines = per_kind.get_lines()
    assert [ln.get_label().split()[0] for ln in lines] == kinds
    for ln, k in zip(lines, kinds):
        assert len(ln.get_ydata()) == s["ls"]["by_kind"][k]["count"] + 1 and ln.get_ydata()[-1] == 1.0
    assert per_kind.get_xlabel().startswith("Load/Store latency")
    labels = [ln.get_label() for ln in per_class.get_lines()]
    ls_prio = int(ops["prio"][0].as_py())
    assert any(lb.startswith(f"Load/Store, prio {ls_prio}") for lb in labels)
    assert any("messages (FCT)" in lb for lb in labels)
    assert per_class.get_xscale() == "log"
    assert f"{s['ls']['count']:,} of {s['ls']['total']:,} operations completed" in fig._suptitle.get_text()


def test_no_ls_plot_without_load_store_rows(raw, tmp_path):
    path, _ = raw
    assert not P.has_ls(path)
    assert "ls_latency_cdf.png" not in [p.name for p in P.plot_all(path, tmp_path / "plots")]
