"""Workload generators: turn a scenario's [[workload]] tables into flows.

Each generator returns numpy columns (src, dst, size, start_ps, prio), so an all-to-all of
a 1024-host fat-tree (about a million flows) is built without a Python object per flow.

- incast: every sender sends `size` bytes to one receiver, all at `start` (optionally
  staggered by `stagger` per sender): the hard case of lossless fabrics.
- permutation: each host sends to exactly one other host and receives from exactly one
  (a random derangement, seeded): the classic test of ECMP path collisions.
- alltoall: every host sends `size` bytes to every other host (MoE dispatch, the
  all-to-all collective).
"""
from __future__ import annotations

import numpy as np

from .scenario import INT64_MAX, MAX_SIZE_BYTES, MAX_TIME_PS, FlowSpec, Scenario, ScenarioError, n_hosts

from .scenario import LS_KINDS, TRANSPORTS, VERBS

COLUMNS = ("src", "dst", "size", "start_ps", "prio", "verb", "transport")
TRANSPORT_CODES = {t: i for i, t in enumerate(TRANSPORTS)}   # engine Transport (csrc/core.pxd)


def _cols(src, dst, size, start, prio, verb=0, transport=None):
    """Flow columns; `transport` defaults to raw for verb raw, roce otherwise."""
    n = len(src)
    verb = np.broadcast_to(np.asarray(verb, dtype=np.int32), (n,))
    if transport is None:
        transport = np.where(verb == 0, 0, 1)
    return {
        "transport": np.broadcast_to(np.asarray(transport, dtype=np.int32), (n,)).copy(),
        "verb": np.broadcast_to(np.asarray(verb, dtype=np.int32), (n,)).copy(),
        "src": np.asarray(src, dtype=np.int32),
        "dst": np.asarray(dst, dtype=np.int32),
        "size": np.broadcast_to(np.asarray(size, dtype=np.int64), (n,)).copy(),
        "start_ps": np.broadcast_to(np.asarray(start, dtype=np.int64), (n,)).copy(),
        "prio": np.broadcast_to(np.asarray(prio, dtype=np.int32), (n,)).copy(),
    }


def incast(senders, receiver: int, size: int, start_ps: int = 0, prio: int = 0, stagger_ps: int = 0):
    senders = np.asarray(senders, dtype=np.int32)
    start = start_ps + stagger_ps * np.arange(len(senders), dtype=np.int64)
    return _cols(senders, np.full(len(senders), receiver), size, start, prio)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation with no fixed point (rejection sampling; expected
    e tries)."""
    if n < 2:
        raise ScenarioError("a permutation needs at least 2 hosts")
    while True:
        p = rng.permutation(n)
        if not np.any(p == np.arange(n)):
            return p


def permutation(hosts: int, size: int, seed: int, start_ps: int = 0, prio: int = 0):
    dst = derangement(hosts, np.random.default_rng(seed))
    return _cols(np.arange(hosts), dst, size, start_ps, prio)


def alltoall(hosts: int, size: int, start_ps: int = 0, prio: int = 0):
    src = np.repeat(np.arange(hosts, dtype=np.int32), hosts - 1)
    off = np.tile(np.arange(1, hosts, dtype=np.int32), hosts)
    dst = (src + off) % hosts      # each source visits destinations in a rotated order
    return _cols(src, dst, size, start_ps, prio)


def expand(sc: Scenario) -> dict[str, np.ndarray]:
    """All flows of a scenario: explicit [[flow]] tables first, then each workload."""
    parts = []
    if sc.flows:
        parts.append(_cols([f.src for f in sc.flows], [f.dst for f in sc.flows],
                           [f.size for f in sc.flows], [f.start_ps for f in sc.flows],
                           [f.prio for f in sc.flows], [VERBS.index(f.verb) for f in sc.flows],
                           [TRANSPORT_CODES[f.transport] for f in sc.flows]))
    count = n_hosts(sc.topology)
    for w in sc.workloads:
        if w["kind"] == "incast":
            part = incast(w["senders"], w["receiver"], w["size"], w["start_ps"], w["prio"], w["stagger_ps"])
        elif w["kind"] == "permutation":
            part = permutation(count, w["size"], w["seed"] or sc.seed, w["start_ps"], w["prio"])
        else:
            part = alltoall(count, w["size"], w["start_ps"], w["prio"])
        part["verb"][:] = VERBS.index(w["verb"])
        part["transport"][:] = TRANSPORT_CODES[w["transport"]]
        parts.append(part)
    if not parts:
        return _cols([], [], [], [], [])
    return {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}


__all__ = ["incast", "permutation", "alltoall", "derangement", "expand", "FlowSpec"]


# ---------------------------------------------------------------------------------------
# Operation tables (trace replay, collective schedules): one row per operation.

TABLE_COLUMNS = ("id", "time_ps", "src", "dst", "op", "bytes", "prio")
OPTIONAL_COLUMNS = ("qp", "dep")


LS_ALIASES = {"atomic": "fadd"}
UET_OP = "uet_write"                    # a workload table's op name for a UET message


def from_table(table, n_hosts: int, max_ls_size: int = 4096) -> dict[str, np.ndarray]:
    """Validate an operation table and turn it into flow columns.

    `table`: a mapping of equal-length arrays or a pyarrow Table with columns id, time_ps,
    src, dst, op (name or Verb index), bytes, prio, and optionally qp (ops sharing
    (src, dst, qp) share a queue pair; -1: own) and dep (id of the op this one waits for,
    -1 none; it is posted time_ps after that op completes). Returns the flow columns plus
    `qp_key` and `dep` (a flow index, -1 none), and under `ls` the Load/Store rows (ops
    load, store, store_ack, fadd, cas, fence; `atomic` means fadd) for the GPUs' Load/Store
    engines: posted at time_ps in table order per GPU, optional `addr` column, no deps.
    """
    if hasattr(table, "column_names"):
        table = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    missing = [c for c in TABLE_COLUMNS if c not in table]
    if missing:
        raise ScenarioError(f"workload table: missing column(s) {', '.join(missing)}; "
                            f"required: {', '.join(TABLE_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)})")
    n = len(table["id"])

    def col(name, dtype, default=None):
        if name not in table:
            return np.full(n, default, dtype=dtype)
        raw = np.asarray(table[name])
        if len(raw) != n:
            raise ScenarioError(f"workload table: column {name} has {len(raw)} rows, id has {n}")
        if raw.dtype.kind not in "iu":
            if raw.dtype.kind == "f" and np.all(np.isfinite(raw) & (raw == np.round(raw))) \
                    and not np.any(np.abs(raw) > INT64_MAX):
                return raw.astype(dtype)
            raise ScenarioError(f"workload table: column {name} must be integers, got {raw.dtype}")
        return raw.astype(dtype)

    ids = col("id", np.int64)
    start = col("time_ps", np.int64)
    src, dst = col("src", np.int64), col("dst", np.int64)
    size, prio = col("bytes", np.int64), col("prio", np.int64)
    qp, dep_id = col("qp", np.int64, -1), col("dep", np.int64, -1)
    ops = np.asarray(table["op"])
    ls_kind = np.full(n, -1, dtype=np.int64)
    uet = np.zeros(n, dtype=bool)
    if ops.dtype.kind not in "iu":
        # "uet_write": a UET message (SES write) rather than a RoCE WRITE
        uet = np.asarray([str(o).lower() == UET_OP for o in ops], dtype=bool)
        ops = np.where(uet, "write", ops) if n else ops
    if ops.dtype.kind in "iu":
        verb = ops.astype(np.int64)
        bad = np.nonzero((verb < 0) | (verb >= len(VERBS)))[0]
    else:
        names = np.asarray([LS_ALIASES.get(str(o).lower(), str(o).lower()) for o in ops])
        ls_kind = np.array([LS_KINDS.index(x) if x in LS_KINDS else -1 for x in names], dtype=np.int64)
        verb = np.array([VERBS.index(x) if x in VERBS else -1 for x in names], dtype=np.int64)
        bad = np.nonzero((verb < 0) & (ls_kind < 0))[0]
    if len(bad):
        raise ScenarioError(f"workload table row {bad[0]}: op {ops[bad[0]]!r} is not one of "
                            f"{', '.join(VERBS + LS_KINDS)}")
    is_ls = ls_kind >= 0
    fence = ls_kind == LS_KINDS.index("fence")
    checks = (
        ((src < 0) | (src >= n_hosts), "src", f"a host index 0..{n_hosts - 1}"),
        ((dst < 0) | (dst >= n_hosts), "dst", f"a host index 0..{n_hosts - 1}"),
        ((src == dst) & ~fence, "dst", "a host other than src"),
        ((size < 1) & ~fence, "bytes", "at least 1"),
        (is_ls & ~fence & (size > max_ls_size), "bytes", f"at most {max_ls_size} for a Load/Store op (ls.max_size)"),
        (is_ls & (dep_id >= 0), "dep", "-1 for a Load/Store op (it issues in order on its GPU; use a fence)"),
        (size > MAX_SIZE_BYTES, "bytes", f"at most {MAX_SIZE_BYTES} (1 TiB)"),
        ((prio < 0) | (prio > 7), "prio", "a priority 0..7"),
        ((start < 0) | (start > MAX_TIME_PS), "time_ps", f"in 0..{MAX_TIME_PS} (1e6 s)"),
    )
    for mask, name, want in checks:
        rows = np.nonzero(mask)[0]
        if len(rows):
            r = rows[0]
            raise ScenarioError(f"workload table row {r} (id {ids[r]}): {name} must be {want}")
    # NOTE: duplicates from the sort, not np.unique (which imports numpy.ma, 11 ms)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    same = np.nonzero(sorted_ids[1:] == sorted_ids[:-1])[0]
    if len(same):
        raise ScenarioError(f"workload table: id {sorted_ids[same[0]]} appears more than once; ids must be unique")
    dep = np.full(n, -1, dtype=np.int64)
    has = dep_id >= 0
    pos = np.searchsorted(sorted_ids, dep_id[has])
    pos = np.minimum(pos, n - 1)
    found = sorted_ids[pos] == dep_id[has]
    if not np.all(found):
        r = np.nonzero(has)[0][np.nonzero(~found)[0][0]]
        raise ScenarioError(f"workload table row {r} (id {ids[r]}): dep {dep_id[r]} is not the id of any operation")
    dep[has] = order[pos]
    on_ls = np.nonzero(has & is_ls[np.maximum(dep, 0)])[0]
    if len(on_ls):
        r = on_ls[0]
        raise ScenarioError(f"workload table row {r} (id {ids[r]}): dep {dep_id[r]} is a Load/Store op; "
                            f"only RDMA and raw operations can be waited for")
    _check_acyclic(dep, ids)
    fl = ~is_ls
    remap = np.cumsum(fl) - 1                        # row -> flow index among non-LS rows
    cols = _cols(src[fl], dst[fl], size[fl], start[fl], prio[fl], verb[fl],
                 np.where(uet, 2, np.where(verb == 0, 0, 1))[fl])
    cols["qp_key"] = qp[fl]
    cols["dep"] = np.where(dep[fl] >= 0, remap[np.maximum(dep[fl], 0)], -1)
    atomic = (ls_kind == LS_KINDS.index("fadd")) | (ls_kind == LS_KINDS.index("cas"))
    cols["ls"] = {
        "src": src[is_ls], "dst": np.where(fence, src, dst)[is_ls], "kind": ls_kind[is_ls],
        "size": np.where(atomic, 8, np.where(fence, 0, size))[is_ls],
        "addr": col("addr", np.int64, 0)[is_ls], "issue_ps": start[is_ls],
        "order": np.nonzero(is_ls)[0].astype(np.float64),
    }
    return cols


def _check_acyclic(dep: np.ndarray, ids: np.ndarray) -> None:
    """Each op waits for at most one other, so the dependency graph is a forest unless
    following dep links from some op comes back to it."""
    state = np.zeros(len(dep), dtype=np.int8)      # 0 new, 1 on the current walk, 2 done
    for start in range(len(dep)):
        walk, i = [], start
        while i >= 0 and state[i] == 0:
            state[i] = 1
            walk.append(i)
            i = dep[i]
        if i >= 0 and state[i] == 1:
            raise ScenarioError(f"workload table: dependency cycle through id {ids[i]}")
        state[walk] = 2
