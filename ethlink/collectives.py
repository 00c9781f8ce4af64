"""Collective schedules as workload tables (see ethlink.replay): what GPU jobs put on the
fabric, operation by operation, with the dependencies between steps.

- `moe_alltoall`: a mixture-of-experts layer: every rank dispatches tokens to every other
  rank (all-to-all), optionally skewed towards popular experts, then each expert returns
  its results (combine) once the tokens it answers have arrived.
- `ring_allreduce`: a gradient bucket all-reduced around a ring (reduce-scatter then
  all-gather, 2(N-1) steps); each step's send from rank i to rank i+1 waits for the
  previous step's send into rank i (from rank i-1), as NCCL's ring does.

Every generator returns a pyarrow Table in `ethlink.replay.WORKLOAD_SCHEMA`, with the
call that made it in the schema metadata (`generator`), ready for
`ethlink.Simulation(scenario, workload=table)` or `ethlink.replay.write_workload`.

Model and limits: a dependency is on the completion (CQE) of the op waited for, at its
requester: for raw ops that is the last byte's delivery, for RoCE WRITE/SEND the last
ACK's return, so a RoCE ring step starts half a round trip later than a real receiver
could; a step's reduction is modelled as a fixed delay (`step_gap_ps`), not as compute.
All of a rank's sends to one peer share one queue pair (qp 0), as a communicator's
connection does. A Load/Store mix needs the ethlink transport (issue 4) and is not here yet.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from .replay import as_workload
from .scenario import VERBS, ScenarioError

__all__ = ["moe_alltoall", "ring_allreduce", "chunk_sizes"]


def _ranks(hosts: int | Sequence[int]) -> np.ndarray:
    if isinstance(hosts, (int, np.integer)):
        if hosts < 2:
            raise ScenarioError(f"a collective needs at least 2 ranks, got {hosts}")
        return np.arange(int(hosts), dtype=np.int64)
    r = np.asarray(list(hosts), dtype=np.int64)
    if len(r) < 2:
        raise ScenarioError(f"a collective needs at least 2 ranks, got {len(r)}")
    if len(np.unique(r)) != len(r) or (r < 0).any():
        raise ScenarioError(f"ranks must be distinct host indices >= 0, got {r.tolist()}")
    return r


def _check(op: str, prio: int, start_ps: int) -> None:
    if op not in VERBS:
        raise ScenarioError(f"op {op!r} is not one of {', '.join(VERBS)}")
    if not 0 <= prio <= 7:
        raise ScenarioError(f"prio must be 0..7, got {prio}")
    if start_ps < 0:
        raise ScenarioError(f"start_ps must be >= 0, got {start_ps}")


def _call(name: str, **kw) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    return f"ethlink.collectives.{name}({args})"


def chunk_sizes(total: int, n: int) -> np.ndarray:
    """`total` bytes cut in `n` chunks as even as possible (the first total % n one byte
    larger)."""
    base, extra = divmod(int(total), n)
    return base + (np.arange(n) < extra).astype(np.int64)


def ring_allreduce(hosts: int | Sequence[int], bucket_bytes: int, *, op: str = "write", prio: int = 0,
                   start_ps: int = 0, step_gap_ps: int = 0) -> pa.Table:
    """Ring all-reduce of a `bucket_bytes` gradient bucket over `hosts` ranks (a count:
    hosts 0..N-1, or a list of host indices in ring order).

    The bucket is cut in N chunks (`chunk_sizes`). Step s (0 <= s < 2(N-1)) has one op per
    rank i, sending to rank i+1 (mod N): in the reduce-scatter steps (s < N-1) chunk
    (i - s) mod N, in the all-gather steps (k = s - (N-1)) chunk (i + 1 - k) mod N.
    Op id = s * N + i. Step 0 is posted at `start_ps`; step s > 0 of rank i depends on
    step s-1 of rank i-1 (the op that delivered to rank i what it forwards) and is posted
    `step_gap_ps` after that op completes.

    On an idle fabric where every step takes the same time T, the bucket is done after
    2(N-1) T + (2N-3) step_gap_ps.
    """
    _check(op, prio, start_ps)
    ranks = _ranks(hosts)
    n = len(ranks)
    if bucket_bytes < n:
        raise ScenarioError(f"bucket_bytes ({bucket_bytes}) must be at least the number of ranks ({n})")
    if step_gap_ps < 0:
        raise ScenarioError(f"step_gap_ps must be >= 0, got {step_gap_ps}")
    steps = 2 * (n - 1)
    s = np.repeat(np.arange(steps, dtype=np.int64), n)
    i = np.tile(np.arange(n, dtype=np.int64), steps)
    k = s - (n - 1)
    chunk = np.where(s < n - 1, (i - s) % n, (i + 1 - k) % n)
    ids = s * n + i
    dep = np.where(s > 0, (s - 1) * n + (i - 1) % n, -1)
    table = {
        "id": ids,
        "time_ps": np.where(s == 0, start_ps, step_gap_ps).astype(np.int64),
        "src": ranks[i],
        "dst": ranks[(i + 1) % n],
        "op": [op] * len(ids),
        "bytes": chunk_sizes(bucket_bytes, n)[chunk],
        "prio": np.full(len(ids), prio, dtype=np.int64),
        "qp": np.zeros(len(ids), dtype=np.int64),
        "dep": dep,
    }
    call = _call("ring_allreduce", hosts=hosts if isinstance(hosts, int) else ranks.tolist(),
                 bucket_bytes=bucket_bytes, op=op, prio=prio, start_ps=start_ps, step_gap_ps=step_gap_ps)
    return as_workload(table, "ring_allreduce", generator=call)


def moe_alltoall(hosts: int | Sequence[int], bytes_per_pair: int, *, op: str = "write", prio: int = 0,
                 start_ps: int = 0, combine: bool = True, expert_ps: int = 0, skew: float = 0.0,
                 seed: int = 0) -> pa.Table:
    """One mixture-of-experts layer over `hosts` ranks (each rank hosts one expert).

    Dispatch: every rank i sends to every other rank j, all posted at `start_ps`, each
    source visiting destinations in the rotated order i+1, i+2, ... (so no destination is
    everyone's first). With `skew` 0 every pair carries `bytes_per_pair`; with skew > 0
    expert j's popularity is proportional to rank_j ** -skew (a Zipf law over a seeded
    random order of the experts), and each source splits the same total,
    bytes_per_pair x (N-1), in proportion to the popularity of the other experts (at
    least 1 byte each); pairs ids 0..M-1 (M = N(N-1)) in posting order.
    Combine (if `combine`): for each dispatch i->j, an op j->i of the same size (the
    expert's results go back), id M + that dispatch's id, depending on that dispatch and
    posted `expert_ps` after it completes.
    All ops between one ordered pair share a queue pair (qp 0).
    """
    _check(op, prio, start_ps)
    ranks = _ranks(hosts)
    n = len(ranks)
    if bytes_per_pair < 1:
        raise ScenarioError(f"bytes_per_pair must be >= 1, got {bytes_per_pair}")
    if skew < 0 or expert_ps < 0:
        raise ScenarioError("skew and expert_ps must be >= 0")
    src = np.repeat(np.arange(n, dtype=np.int64), n - 1)
    dst = (src + np.tile(np.arange(1, n, dtype=np.int64), n)) % n
    if skew == 0:
        size = np.full(len(src), int(bytes_per_pair), dtype=np.int64)
    else:
        order = np.random.default_rng(seed).permutation(n)
        pop = (order + 1.0) ** -float(skew)
        total = int(bytes_per_pair) * (n - 1)
        w = pop[dst]
        share = w / np.bincount(src, weights=w, minlength=n)[src]
        size = np.maximum(np.floor(share * total).astype(np.int64), 1)
    m = len(src)
    ids = np.arange(m, dtype=np.int64)
    cols = {
        "id": ids, "time_ps": np.full(m, start_ps, dtype=np.int64), "src": ranks[src], "dst": ranks[dst],
        "bytes": size, "dep": np.full(m, -1, dtype=np.int64),
    }
    if combine:
        cols = {
            "id": np.concatenate([ids, m + ids]),
            "time_ps": np.concatenate([cols["time_ps"], np.full(m, expert_ps, dtype=np.int64)]),
            "src": np.concatenate([cols["src"], ranks[dst]]),
            "dst": np.concatenate([cols["dst"], ranks[src]]),
            "bytes": np.concatenate([size, size]),
            "dep": np.concatenate([cols["dep"], ids]),
        }
    rows = len(cols["id"])
    cols.update(op=[op] * rows, prio=np.full(rows, prio, dtype=np.int64), qp=np.zeros(rows, dtype=np.int64))
    call = _call("moe_alltoall", hosts=hosts if isinstance(hosts, int) else ranks.tolist(),
                 bytes_per_pair=bytes_per_pair, op=op, prio=prio, start_ps=start_ps, combine=combine,
                 expert_ps=expert_ps, skew=skew, seed=seed)
    return as_workload({c: cols[c] for c in ("id", "time_ps", "src", "dst", "op", "bytes", "prio", "qp", "dep")},
                       "moe_alltoall", generator=call)


def loadstore_mix(hosts: int | Sequence[int], ops_per_gpu: int, *, rate: float = 5e7,
                  mix: dict | None = None, sizes: Sequence[int] = (64, 128, 256), fence_every: int = 0,
                  start_ps: int = 0, seed: int = 0) -> pa.Table:
    """Load/Store traffic of a tensor-parallel group: every GPU issues `ops_per_gpu`
    operations to uniformly chosen other GPUs, open loop at `rate` ops/s (op k at
    start_ps + k / rate), kinds drawn from `mix` (default 60 % load, 30 % store, 5 %
    store_ack, 5 % fadd), sizes uniformly from `sizes` (atomics 8 B), a fence after every
    `fence_every` operations (0: none); seeded. Ids are GPU-major; addresses 64 B aligned.
    Replays on the GPUs' Load/Store engines (`ethlink replay`), beside or without RDMA."""
    ranks = _ranks(hosts)
    n = len(ranks)
    if n < 2 or ops_per_gpu < 1 or rate <= 0:
        raise ScenarioError("loadstore_mix needs >= 2 GPUs, ops_per_gpu >= 1 and rate > 0")
    mix = dict(mix or {"load": 0.6, "store": 0.3, "store_ack": 0.05, "fadd": 0.05})
    rng = np.random.default_rng(seed)
    src = np.repeat(np.arange(n), ops_per_gpu)
    dst = (src + rng.integers(1, n, size=len(src))) % n
    names = list(mix)
    w = np.asarray([mix[k] for k in names], dtype=float)
    kind = np.asarray(names, dtype=object)[rng.choice(len(names), size=len(src), p=w / w.sum())]
    size = np.asarray(sizes, dtype=np.int64)[rng.integers(0, len(sizes), size=len(src))]
    size = np.where(np.isin(kind, ["fadd", "cas"]), 8, size)
    k = np.tile(np.arange(ops_per_gpu), n)
    time_ps = start_ps + (k * 1e12 / rate).astype(np.int64)
    if fence_every:
        at = np.nonzero((k + 1) % fence_every == 0)[0]
        pos = np.insert(np.arange(len(src)), at + 1, at)           # a fence right after op `at`
        fence = np.zeros(len(pos), dtype=bool)
        fence[at + 1 + np.arange(len(at))] = True
        src, time_ps = src[pos], time_ps[pos]
        dst = np.where(fence, src, dst[pos])
        kind = np.where(fence, "fence", kind[pos])
        size = np.where(fence, 8, size[pos])
    rows = len(src)
    call = _call("loadstore_mix", hosts=hosts if isinstance(hosts, int) else ranks.tolist(),
                 ops_per_gpu=ops_per_gpu, rate=rate, mix=mix, sizes=list(sizes), fence_every=fence_every,
                 start_ps=start_ps, seed=seed)
    return as_workload({
        "id": np.arange(rows, dtype=np.int64), "time_ps": time_ps, "src": ranks[src], "dst": ranks[dst],
        "op": kind.tolist(), "bytes": size, "prio": np.zeros(rows, dtype=np.int64),
        "qp": np.full(rows, -1, dtype=np.int64), "dep": np.full(rows, -1, dtype=np.int64),
    }, "loadstore_mix", generator=call)


# ---------------------------------------------------------------------------------------
# The sample workloads shipped in traces/ (traces/README.md), rebuilt by write_samples.

SAMPLES = {
    "moe-alltoall-8.csv": lambda: moe_alltoall(8, 65536, op="write", expert_ps=2_000_000, skew=1.0, seed=1),
    "moe-alltoall-16.arrow": lambda: moe_alltoall(16, 262144, op="write", expert_ps=5_000_000, skew=1.2, seed=7),
    "ring-allreduce-8.csv": lambda: ring_allreduce(8, 4 * 2**20, op="write", step_gap_ps=1_000_000),
    "ring-allreduce-16.parquet": lambda: ring_allreduce(16, 25 * 2**20, op="write", step_gap_ps=1_000_000),
    "loadstore-mix-8.csv": lambda: loadstore_mix(8, 200, rate=5e7, fence_every=50, seed=1),
}


def write_samples(outdir) -> list:
    """Write every sample of SAMPLES into `outdir` (the repository's traces/)."""
    from pathlib import Path

    from .replay import write_workload

    return [write_workload(make(), Path(outdir) / name) for name, make in SAMPLES.items()]


if __name__ == "__main__":        # python -m ethlink.collectives traces
    import sys

    for p in write_samples(sys.argv[1] if len(sys.argv) > 1 else "traces"):
        print(p)
