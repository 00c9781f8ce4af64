"""Load/Store workloads: the operations GPUs issue to each other's memory.

A scenario gives them as streams ([[loadstore]]: every listed GPU issues `ops`
operations, open loop at `rate` ops/s or closed loop with as many outstanding as it has
tags) or one by one ([[ls_op]]). This module draws them (seeded: numpy's PCG64 from the
scenario seed and the stream's own seed) into the engine's LsOp table, ordered per GPU in
issue order, and summarises a run's completed operations.

Destinations: `uniform` (any other GPU), `hotspot` (the `hot` GPU with probability
`hot_fraction`, else uniform) or `neighbour` (GPU i+1). Kinds from the `mix` weights,
sizes uniformly from `sizes`; atomics move 8 B. Addresses are 64 B aligned in a 1 GiB
window, so operations to one destination spread over its memory.
"""
from __future__ import annotations

import numpy as np

from . import _engine
from .scenario import LS_KINDS, Scenario

KIND = {k: i for i, k in enumerate(LS_KINDS)}
WINDOW = 1 << 30


def _stream(w: dict, n_hosts: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, w["seed"]])
    gpus = np.asarray(w["gpus"], dtype=np.int64)
    n = w["ops"]
    src = np.repeat(gpus, n)
    total = len(src)
    if w["destinations"] == "neighbour":
        dst = (src + 1) % n_hosts
    else:
        dst = (src + rng.integers(1, n_hosts, size=total)) % n_hosts      # never src itself
        if w["destinations"] == "hotspot":
            hot = (rng.random(total) < w["hot_fraction"]) & (src != w["hot"])
            dst = np.where(hot, w["hot"], dst)
    names = [k for k in KIND if k in w["mix"]]      # LS_KINDS order: the draw must not depend on
                                                    # the order keys were written (JSON sorts them)
    weights = np.asarray([w["mix"][k] for k in names], dtype=float)
    kind = np.asarray([KIND[k] for k in names])[rng.choice(len(names), size=total, p=weights / weights.sum())]
    size = np.asarray(w["sizes"], dtype=np.int64)[rng.integers(0, len(w["sizes"]), size=total)]
    size = np.where((kind == KIND["fadd"]) | (kind == KIND["cas"]), 8, size)
    addr = rng.integers(0, WINDOW // 64, size=total) * 64
    k = np.tile(np.arange(n), len(gpus))
    if w["mode"] == "open":
        issue = w["start_ps"] + (k * 1e12 / w["rate"]).astype(np.int64)
    else:
        issue = np.full(total, w["start_ps"], dtype=np.int64)
    cols = {"src": src, "dst": dst, "kind": kind, "size": size, "addr": addr, "issue_ps": issue,
            "order": k.astype(np.float64)}
    if w["fence_every"]:
        f = w["fence_every"]
        fences = np.nonzero((k + 1) % f == 0)[0]
        extra = {c: v[fences] for c, v in cols.items()}
        extra["kind"] = np.full(len(fences), KIND["fence"])
        extra["dst"] = extra["src"]
        extra["size"] = np.zeros(len(fences), dtype=np.int64)
        extra["order"] = extra["order"] + 0.5              # right after the op it follows
        cols = {c: np.concatenate([cols[c], extra[c]]) for c in cols}
    return cols


def build_ops(sc: Scenario, n_hosts: int, table_ops: dict | None = None):
    """The LsOp table (in per-GPU issue order, linked by `next`) and the LsGpu table;
    `table_ops`: Load/Store rows of a workload table (ethlink.workloads.from_table)."""
    parts = [_stream(w, n_hosts, sc.seed) for w in sc.loadstore]
    if table_ops is not None and len(table_ops["src"]):
        parts.append(table_ops)
    if sc.ls_ops:
        o = sc.ls_ops
        parts.append({
            "src": np.array([x["src"] for x in o]), "dst": np.array([x["dst"] for x in o]),
            "kind": np.array([KIND[x["kind"]] for x in o]), "size": np.array([x["size"] for x in o]),
            "addr": np.array([x["addr"] for x in o]), "issue_ps": np.array([x["time_ps"] for x in o]),
            "order": np.arange(len(o), dtype=np.float64),
        })
    gpus = np.zeros(n_hosts, dtype=_engine.LSGPU_DTYPE)
    gpus["tags"] = sc.ls.tags
    gpus["pend"] = -1
    gpus["open_pi"] = -1
    if not parts:
        return np.zeros(0, dtype=_engine.LSOP_DTYPE), gpus
    cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    order = np.lexsort((cols["order"], cols["issue_ps"], cols["src"]))
    ops = np.zeros(len(order), dtype=_engine.LSOP_DTYPE)
    for c in ("src", "dst", "kind", "size", "addr", "issue_ps"):
        ops[c] = cols[c][order]
    ops["start_ps"] = -1
    ops["complete_ps"] = -1
    ops["chain"] = -1
    ops["port"] = -1
    nxt = np.arange(1, len(ops) + 1, dtype=np.int32)
    last_of_gpu = np.r_[ops["src"][1:] != ops["src"][:-1], True]
    nxt[last_of_gpu] = -1
    ops["next"] = nxt
    first = np.r_[True, ops["src"][1:] != ops["src"][:-1]]
    gpus["pend"][ops["src"][first]] = np.nonzero(first)[0]
    return ops, gpus


def summarize(ops: np.ndarray, gpus: np.ndarray, counters: dict, sim_ps: int) -> dict | None:
    """The `ls` block of summary.json: latency from issue (a tag taken) to completion."""
    if len(ops) == 0:
        return None
    real = ops["kind"] != KIND["fence"]
    done = real & (ops["complete_ps"] >= 0)
    lat = (ops["complete_ps"] - ops["start_ps"])[done]
    wait = (ops["start_ps"] - ops["issue_ps"])[done]
    out = {"count": int(done.sum()), "issued": int((real & (ops["start_ps"] >= 0)).sum()),
           "total": int(real.sum())}
    if len(lat):
        span = int(ops["complete_ps"][done].max() - ops["start_ps"][done].min())
        out.update({
            "p50_ps": int(np.percentile(lat, 50, method="lower")),
            "p99_ps": int(np.percentile(lat, 99, method="lower")),
            "p999_ps": int(np.percentile(lat, 99.9, method="lower")),
            "max_ps": int(lat.max()), "min_ps": int(lat.min()), "mean_ps": float(lat.mean()),
            "wait_for_tag_mean_ps": float(wait.mean()),
            "ops_per_s": out["count"] / (span / 1e12) if span > 0 else None,
        })
        by_kind = {}
        for name, k in KIND.items():
            sel = done & (ops["kind"] == k)
            if sel.any():
                lk = (ops["complete_ps"] - ops["start_ps"])[sel]
                by_kind[name] = {"count": int(sel.sum()), "p50_ps": int(np.percentile(lk, 50, method="lower")),
                                 "p99_ps": int(np.percentile(lk, 99, method="lower")), "max_ps": int(lk.max())}
        out["by_kind"] = by_kind
    wire = counters["ls_wire_bytes"]
    out["efficiency"] = counters["ls_payload_bytes"] / wire if wire else None
    out["payload_bytes"] = counters["ls_payload_bytes"]
    out["wire_bytes"] = wire
    out["frames"] = counters["ls_frames"]
    out["retries"] = counters["ls_retries"]
    active = gpus["tags"].astype(np.float64) * max(sim_ps, 1)
    used = gpus["ops_done"] > 0
    out["tag_occupancy"] = float((gpus["tag_ps"][used] / active[used]).mean()) if used.any() else 0.0
    return out
