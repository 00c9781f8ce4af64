"""Trace speed: writing throughput, and the cost of per-hop tracing on the 64:1 incast.

- test_trace_write_throughput[COMPRESSION]: TraceWriter.write of real incast records (a
  hop-level trace, drained at the default ring capacity) plus close(), which waits for
  the writer's thread and appends the file's footer (nothing is re-encoded). extra_info: rows_per_s, records_mb_per_s (input,
  one TraceRec per row), file_mb_per_s (output), file_bytes_per_row, and the split
  between write() and close().
- test_incast_trace_hop_vs_off[COMPRESSION-SCENARIO]: `sim.run()` of the 64:1 incast
  (`incast-dcqcn` as shipped, 225 k rows; `incast-raw` with 16 MiB per sender, where fixed
  costs matter less; and the demo, `ethlink-mixed`) with trace=hop streaming into a
  TraceWriter and closed, against the same run with tracing off. extra_info: slowdown (hop / off, fastest rounds; the issue's
  goal is under 2x), the same without the writer (engine and drain only), rows,
  rows_per_s and the file's bytes per row.

Run with `make bench`. Never asserted as wall time: results are compared run to run.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from ethlink import _engine, scenarios
from ethlink.sim import Simulation
from ethlink.trace import TraceWriter

RECORD_BYTES = _engine.TRACE_DTYPE.itemsize


@pytest.fixture(scope="module")
def incast_records():
    sim = Simulation(scenarios.load("incast-raw"), trace="hop")
    batches = []
    sim.run(trace_sink=batches.append)
    return sim, batches


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_trace_write_throughput(benchmark, tmp_path, incast_records, compression):
    sim, batches = incast_records
    rows = sum(len(b) for b in batches)
    split = {}

    def write(i=[0]):
        i[0] += 1
        t0 = time.perf_counter()
        w = TraceWriter.for_simulation(sim, tmp_path / f"t{i[0]}.arrow", compression=compression)
        for b in batches:
            w.write(b)
        t1 = time.perf_counter()
        path = w.close()
        split.update(write_s=t1 - t0, close_s=time.perf_counter() - t1, file_bytes=path.stat().st_size)
        path.unlink()

    benchmark.pedantic(write, rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:          # --benchmark-disable: a smoke run, no timing
        return
    best = benchmark.stats.stats.min
    benchmark.extra_info.update({
        "rows": rows,
        "rows_per_s": rows / best,
        "records_mb_per_s": rows * RECORD_BYTES / best / 1e6,
        "file_mb_per_s": split["file_bytes"] / best / 1e6,
        "file_bytes_per_row": split["file_bytes"] / rows,
        "last_write_s": split["write_s"],
        "last_close_s": split["close_s"],
    })


def _fastest(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = fn()
        best = min(best, t)
    return best


INCASTS = {"incast-dcqcn": [], "incast-raw-16MiB": ["workload.0.size=16MiB"], "ethlink-mixed": []}


@pytest.mark.parametrize("scenario", list(INCASTS))
@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_incast_trace_hop_vs_off(benchmark, tmp_path, compression, scenario):
    sc = scenarios.load(scenario.split("-16MiB")[0], INCASTS[scenario])
    out = {}

    def setup():
        return (Simulation(sc, trace="hop"),), {}

    def run_hop(sim):
        w = TraceWriter.for_simulation(sim, tmp_path / "trace.arrow", compression=compression)
        sim.run(trace_sink=w.write)
        w.close()
        out["rows"] = w.rows

    benchmark.pedantic(run_hop, setup=setup, rounds=9, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:          # --benchmark-disable: a smoke run, no timing
        return
    hop = benchmark.stats.stats.min

    def timed(level, sink):
        sim = Simulation(sc, trace=level)
        t0 = time.perf_counter()
        sim.run(trace_sink=sink)
        return time.perf_counter() - t0

    off = _fastest(lambda: timed("off", None), 9)
    drain_only = _fastest(lambda: timed("hop", lambda recs: None), 5)
    benchmark.extra_info.update({
        "rows": out["rows"],
        "rows_per_s": out["rows"] / hop,
        "off_s": off,
        "hop_s": hop,
        "slowdown": hop / off,
        "slowdown_engine_and_drain_only": drain_only / off,
        "trace_bytes_per_row": (tmp_path / "trace.arrow").stat().st_size / max(out["rows"], 1),
    })
    assert np.isfinite(hop / off)
