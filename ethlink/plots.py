"""PNG plots of a run's trace (matplotlib, Agg backend: no display needed).

    from ethlink import plots
    paths = plots.plot_all("out/run/trace.arrow", "out/run/plots")

writes, from the tables of ethlink.analysis:

- queue_depth.png: egress queue depth (KiB) over time of the deepest queues (port, prio);
- flow_throughput.png: accepted throughput (Gb/s) over time of the largest flows, and
  the whole run's goodput;
- pause_timeline.png: PFC pause intervals per egress queue (port, prio) over time;
- fct_cdf.png: CDF of flow completion times (and of slowdown against the ideal);
- ls_latency_cdf.png (traces with Load/Store operations): CDF of Load/Store latency
  (issue to completion, `analysis.ls_ops`) per kind and, when the run also has messages
  (RDMA or raw flows) on the same ports, per traffic class beside the message completion
  times of each class, on one log time axis: what the bulk traffic does to the memory
  traffic that shares the fabric.

Time axes are in ns, us or ms, chosen from the run's length. Each function takes a
trace path (or an analysis.TraceRun) and an output path and returns that path.

Limits: a plot of many queues or flows keeps the top `top` (legend size); queue depth is
drawn as steps between trace samples, so its resolution is the trace's.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import analysis as A  # noqa: E402
from .fileio import replacing  # noqa: E402

__all__ = ["plot_all", "plot_queue_depth", "plot_flow_throughput", "plot_pause_timeline", "plot_fct_cdf",
           "plot_ls_latency", "has_ls"]

_SCALES = (("ms", 10**9), ("us", 10**6), ("ns", 10**3))


def _time_scale(end_ps: int) -> tuple[str, float]:
    for unit, scale in _SCALES:
        if end_ps >= 10 * scale:
            return unit, float(scale)
    return "ns", 1e3


def _finish(fig, ax, path: Path, title: str) -> Path:
    fig.suptitle(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _title(run: A.TraceRun, what: str) -> str:
    md = run.info.metadata
    return f"{md.get('scenario', '')} (seed {md.get('seed', '?')}): {what}"


def plot_queue_depth(trace: A.TraceLike, path: str | os.PathLike[str], *, top: int = 6, summary: A.SummaryLike = None) -> Path:
    """Queue depth over time of the `top` busiest egress queues (queue_depth.png)."""
    run = A.open_run(trace, summary)
    unit, scale = _time_scale(run.end_ps)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    tq = A.top_queues(run, n=top)
    qd = A.queue_depth(run, ports=tq["port"].to_pylist())
    t, port, prio, qb = (qd[c].to_numpy() for c in ("time_ps", "port", "prio", "qbytes"))
    for p, pr, name in zip(tq["port"].to_pylist(), tq["prio"].to_pylist(), tq["name"].to_pylist()):
        m = (port == p) & (prio == pr)
        x = np.concatenate([[0], t[m], [run.end_ps]]) / scale
        y = np.concatenate([[0], qb[m], [qb[m][-1] if m.any() else 0]]) / 1024
        ax.step(x, y, where="post", label=f"{name} prio {pr}")
    if tq.num_rows:
        ax.legend(fontsize=8, loc="upper right")
    else:
        _empty(ax, f"no queue rows in this trace (level {run.info.metadata.get('trace_level')})")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("queue depth (KiB)")
    ax.set_xlim(0, run.end_ps / scale)
    return _finish(fig, ax, Path(path), _title(run, f"egress queue depth, top {top} queues"))


def plot_flow_throughput(trace: A.TraceLike, path: str | os.PathLike[str], *, top: int = 6, bins: int = 100,
                         summary: A.SummaryLike = None) -> Path:
    """Throughput over time of the `top` largest flows, in `bins` bins (flow_throughput.png)."""
    run = A.open_run(trace, summary)
    unit, scale = _time_scale(run.end_ps)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    g = A.goodput(run, bins=bins)
    width = int(g["bin_ps"][0].as_py()) if g.num_rows else 1
    ft = A.flow_throughput(run, bin_ps=width)
    f = ft["flow"].to_numpy()
    if len(f):
        total = np.bincount(f, weights=ft["bytes"].to_numpy())
        biggest = np.argsort(-total, kind="stable")[:top]
        wl = run.workload
        src, dst, op = wl["src"].to_numpy(), wl["dst"].to_numpy(), wl["op"].to_pylist()
        edges = np.append(g["time_ps"].to_numpy(), g.num_rows * width) / scale
        for fl in biggest[total[biggest] > 0]:
            m = f == fl
            dense = np.zeros(g.num_rows)
            dense[ft["time_ps"].to_numpy()[m] // width] = ft["throughput_bps"].to_numpy()[m] / 1e9
            ax.stairs(dense, edges, lw=1.2, label=f"flow {fl} h{src[fl]}->h{dst[fl]} {op[fl]}")
        ax.stairs(g["goodput_bps"].to_numpy() / 1e9, edges, color="k", lw=1.2, alpha=0.5, label="all flows")
        ax.legend(fontsize=8, loc="upper right")
    else:
        _empty(ax, "no delivered payload in this trace")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel(f"throughput (Gb/s, {width / scale:.3g} {unit} bins)")
    ax.set_xlim(0, run.end_ps / scale)
    ax.set_ylim(bottom=0)
    return _finish(fig, ax, Path(path), _title(run, f"delivered throughput, top {top} flows"))


def plot_pause_timeline(trace: A.TraceLike, path: str | os.PathLike[str], *, top: int = 12, summary: A.SummaryLike = None) -> Path:
    """When each of the `top` most paused port-priorities was paused (pause_timeline.png)."""
    run = A.open_run(trace, summary)
    unit, scale = _time_scale(run.end_ps)
    iv = A.pause_intervals(run)
    keys = sorted(set(zip(iv["port"].to_pylist(), iv["prio"].to_pylist())))
    if len(keys) > top:
        tot: dict = {}
        for p, pr, s, e in zip(*(iv[c].to_pylist() for c in ("port", "prio", "start_ps", "end_ps"))):
            tot[(p, pr)] = tot.get((p, pr), 0) + e - s
        keys = sorted(sorted(keys, key=lambda k: -tot[k])[:top])
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.45 * len(keys) + 1.5)))
    port, prio = iv["port"].to_numpy(), iv["prio"].to_numpy()
    s, e = iv["start_ps"].to_numpy(), iv["end_ps"].to_numpy()
    for row, (p, pr) in enumerate(keys):
        m = (port == p) & (prio == pr)
        ax.broken_barh(list(zip(s[m] / scale, (e[m] - s[m]) / scale)), (row - 0.4, 0.8), color="tab:red")
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([f"{A._port_label(run.info, p)} prio {pr}" for p, pr in keys], fontsize=8)
    if not keys:
        _empty(ax, "no PFC pause received in this trace")
        ax.set_yticks([])
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("paused egress queue")
    ax.set_xlim(0, run.end_ps / scale)
    return _finish(fig, ax, Path(path), _title(run, "PFC pause timeline"))


def plot_fct_cdf(trace: A.TraceLike, path: str | os.PathLike[str], *, summary: A.SummaryLike = None) -> Path:
    """CDF of flow completion time and slowdown (fct_cdf.png)."""
    run = A.open_run(trace, summary)
    fl = A.flows(run)
    fct = np.asarray([x for x in fl["fct_ps"].to_pylist() if x is not None], dtype=np.float64)
    sd = np.asarray([x for x in fl["slowdown"].to_pylist() if x is not None], dtype=np.float64)
    unit, scale = _time_scale(int(fct.max()) if len(fct) else run.end_ps)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for a, x, label in ((ax, fct / scale, f"flow completion time ({unit})"), (ax2, sd, "slowdown (FCT / ideal)")):
        if len(x):
            xs = np.sort(x)
            a.step(np.concatenate([[xs[0]], xs]), np.concatenate([[0], np.arange(1, len(xs) + 1) / len(xs)]),
                   where="post")
        else:
            _empty(a, "no completed flow")
        a.set_xlabel(label)
        a.set_ylabel("fraction of completed flows")
        a.set_ylim(0, 1.02)
        a.grid(True, alpha=0.3)
    return _finish(fig, ax, Path(path), _title(run, f"completion-time CDF ({len(fct)} of {fl.num_rows} flows completed)"))


def _cdf(ax, x: np.ndarray, **kw) -> None:
    xs = np.sort(x)
    ax.step(np.concatenate([[xs[0]], xs]), np.concatenate([[0], np.arange(1, len(xs) + 1) / len(xs)]),
            where="post", **kw)


def has_ls(trace: A.TraceLike, summary: A.SummaryLike = None) -> bool:
    """True when the trace has Load/Store operation rows (op_issue with the Load/Store flag)."""
    run = A.open_run(trace, summary)
    ev = run.col("event")
    rows = np.nonzero(ev == A._EV["op_issue"])[0]
    return bool(len(rows)) and bool(np.any(A._take(run, "flags", rows) & A.PF_LS))


def plot_ls_latency(trace: A.TraceLike, path: str | os.PathLike[str], *, summary: A.SummaryLike = None) -> Path:
    """Load/Store latency CDF per kind; beside it, when the run has messages too, per
    traffic class: Load/Store latency and message completion time (FCT) of each class."""
    run = A.open_run(trace, summary)
    ops = A.ls_ops(run)
    kind = ops["kind"].to_numpy(zero_copy_only=False)
    lat = ops["latency_ps"].fill_null(-1).to_numpy()
    prio = ops["prio"].to_numpy()
    real = (kind != "fence") & (lat >= 0)
    fl = A.flows(run) if len(run.workload) else None
    fct = fl["fct_ps"].fill_null(-1).to_numpy() if fl is not None else np.zeros(0, dtype=np.int64)
    fprio = fl["prio"].to_numpy() if fl is not None else np.zeros(0, dtype=np.int64)
    fop = fl["op"].to_numpy(zero_copy_only=False) if fl is not None else np.zeros(0, dtype=object)
    both = bool(real.any() and (fct >= 0).any())
    fig, axes = plt.subplots(1, 2 if both else 1, figsize=(11 if both else 6.5, 4.2), squeeze=False)
    ax = axes[0][0]
    unit, scale = _time_scale(int(lat[real].max()) if real.any() else run.end_ps)
    for k in [k for k in A.LS_KINDS if k != "fence"]:
        m = real & (kind == k)
        if m.any():
            _cdf(ax, lat[m] / scale, label=f"{k} ({int(m.sum()):,})")
    if real.any():
        ax.legend(fontsize=8, loc="lower right")
    else:
        _empty(ax, "no completed Load/Store operation")
    ax.set_xlabel(f"Load/Store latency, issue to completion ({unit})")
    ax.set_ylabel("fraction of completed operations")
    ax.set_ylim(0, 1.02)
    ax.set_title("per kind", fontsize=10)
    if both:
        ax2 = axes[0][1]
        for p in np.unique(prio[real]).tolist():
            m = real & (prio == p)
            _cdf(ax2, lat[m] / 1e6, lw=1.6, label=f"Load/Store, prio {p} ({int(m.sum()):,})")
        done = fct >= 0
        for p in np.unique(fprio[done]).tolist():
            for op in np.unique(fop[done & (fprio == p)]).tolist():
                m = done & (fprio == p) & (fop == op)
                _cdf(ax2, fct[m] / 1e6, ls="--", label=f"{op} messages (FCT), prio {p} ({int(m.sum()):,})")
        ax2.set_xscale("log")
        ax2.set_xlabel("latency / completion time (us, log)")
        ax2.set_ylabel("fraction completed")
        ax2.set_ylim(0, 1.02)
        ax2.set_title("per traffic class: Load/Store latency and message completion", fontsize=10)
        ax2.legend(fontsize=7, loc="lower right")
        ax2.grid(True, alpha=0.3, which="both")
    n, total = int(real.sum()), int((kind != "fence").sum())
    return _finish(fig, ax, Path(path), _title(run, f"Load/Store latency CDF ({n:,} of {total:,} operations completed)"))


def plot_all(trace: A.TraceLike, outdir: str | os.PathLike[str], *, summary: A.SummaryLike = None, top: int = 6, bins: int = 100) -> list[Path]:
    """All four plots into `outdir`, and ls_latency_cdf.png when the trace has Load/Store
    operations; returns their paths."""
    run = A.open_run(trace, summary)
    out = Path(outdir)
    paths = [
        plot_queue_depth(run, out / "queue_depth.png", top=top),
        plot_flow_throughput(run, out / "flow_throughput.png", top=top, bins=bins),
        plot_pause_timeline(run, out / "pause_timeline.png", top=2 * top),
        plot_fct_cdf(run, out / "fct_cdf.png"),
    ]
    if has_ls(run):
        paths.append(plot_ls_latency(run, out / "ls_latency_cdf.png"))
    return paths
