"""Memory budget: what compiling a scenario will allocate, estimated from the validated
scenario alone and checked against the memory this process can get, before anything is
built.

A field can be in range and still ask for more memory than the machine has (a fat-tree of
k = 128 needs routing tables of switches x edge switches, about 10 GiB at their
construction's peak; a 1e15-byte message
needs a frame table of its 2e11 frames for the ideal-time model). Without this check numpy
raises its own MemoryError deep inside compile, or the kernel kills the process; with it,
the scenario is refused with the figure and the fields to change.

What is counted: the largest tables compile builds and the engine keeps (routing:
routers x destination classes, topology.Routes; ports and their 8 queues; flows with their queue
pairs and ideal-time signatures; the frames of the largest message; Load/Store
operations; the trace ring) and the Python objects of the topology builders, each with
the temporaries its construction holds at its peak. Limits: an estimate within a small
factor (tests compare it with tracemalloc's peak of compile), not a bound; the engine's
packet pool and event heap grow with the packets in flight during the run and are not
counted.
"""
from __future__ import annotations

import os
from pathlib import Path

from .scenario import MAX_MTU, Scenario, ScenarioError, n_hosts, spine_count

GiB = 2**30

# Bytes per item at the peak of its construction (numpy dtypes of csrc/core.pxd plus the
# temporaries compile holds; measured with tracemalloc on the built-in scenarios).
CELL_BYTES = 64             # routing, per (router, class): dist int16, set hash uint64, its sort and inverse, table
PORT_BYTES = 2_600          # PortRec + 8 QueueRec + port table columns + Python link objects
NODE_BYTES = 600            # NodeRec + the builder's name, kind and tier objects
FLOW_BYTES = 2_200           # FlowRec + QpRec + workload columns + ideal-time signatures and paths
FRAME_BYTES = 120           # per frame of the largest message: ideal-time frame and pipeline arrays
LS_OP_BYTES = 220           # LsOp + the drawn columns and their sort
TRACE_REC_BYTES = 80 * 3    # TraceRec ring + its columns + the Arrow batch


def fabric_counts(sc: Scenario) -> tuple[int, int, int]:
    """(nodes, ports, hosts) of the scenario's topology, without building it."""
    t = sc.topology
    h = n_hosts(t)
    if t.kind == "star":
        return h + 1, 2 * h, h
    if t.kind == "multiplane-star":
        return h + t.planes, 2 * h * t.planes, h
    if t.kind == "leaf-spine":
        s = spine_count(t)
        return h + t.leaves + s, 2 * (h + t.leaves * s), h
    if t.kind == "ring":
        return h + t.switches, 2 * (h + t.switches), h
    half = t.k // 2
    return h + 5 * half * half, 2 * (h + 2 * t.k * half * half), h


def routing_cells(sc: Scenario) -> int:
    """Routers (switches, and hosts with several ports) x destination classes (hosts
    linked to the same switches), as topology.route builds them."""
    t = sc.topology
    h = n_hosts(t)
    if t.kind == "star":
        return 1
    if t.kind == "multiplane-star":
        return t.planes + h
    if t.kind == "leaf-spine":
        return (t.leaves + spine_count(t)) * t.leaves
    if t.kind == "ring":
        return t.switches * t.switches
    half = t.k // 2
    return 5 * half * half * (t.k * half)


def flow_count(sc: Scenario) -> int:
    count = n_hosts(sc.topology)
    total = len(sc.flows)
    for w in sc.workloads:
        total += {"incast": len(w.get("senders", ())), "permutation": count}.get(w["kind"], count * (count - 1))
    return total


def estimate(sc: Scenario) -> dict[str, int]:
    """Bytes per part of the compiled scenario (see the module doc)."""
    nodes, ports, hosts = fabric_counts(sc)
    routing = routing_cells(sc) * CELL_BYTES
    sizes = [f.size for f in sc.flows] + [w["size"] for w in sc.workloads]
    mtu = min(sc.host.mtu, MAX_MTU)
    ls_ops = sum(len(w["gpus"]) * w["ops"] for w in sc.loadstore) + len(sc.ls_ops)
    return {
        "routing": routing,
        "ports": ports * PORT_BYTES + nodes * NODE_BYTES,
        "flows": flow_count(sc) * FLOW_BYTES,
        "frames": -(-max(sizes, default=0) // mtu) * FRAME_BYTES,
        "loadstore": ls_ops * LS_OP_BYTES,
        "trace": sc.run.trace_capacity * TRACE_REC_BYTES if sc.run.trace != "off" else 0,
    }


def available_bytes() -> int:
    """Memory this process can still get: the kernel's MemAvailable, lowered by a cgroup
    (container) limit when there is one. Without /proc (not Linux): physical memory."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return 2**62
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(avail, 0)


HINTS = {
    "routing": "fewer switches (topology.k, topology.leaves, topology.switches, ...): routing tables are "
               "switches x destination switches",
    "ports": "fewer hosts or switches",
    "flows": "fewer flows (an alltoall has hosts x (hosts - 1) of them)",
    "frames": "smaller messages (size), or a larger host.mtu",
    "loadstore": "fewer Load/Store operations (loadstore ops, gpus)",
    "trace": "a smaller run.trace_capacity",
}


def with_workload(sc: Scenario, n_ops: int, max_bytes: int) -> dict[str, int]:
    """The estimate of `sc` with its traffic replaced by a workload table of `n_ops`
    operations, the largest moving `max_bytes` (a replay)."""
    parts = estimate(sc)
    parts["flows"] = n_ops * FLOW_BYTES
    parts["frames"] = -(-max_bytes // min(sc.host.mtu, MAX_MTU)) * FRAME_BYTES
    return parts


def check(sc: Scenario, available: int | None = None, parts: dict[str, int] | None = None) -> int:
    """Refuse a scenario whose compiled tables (`parts`, default: `estimate(sc)`) would
    not fit the memory available; returns the estimate in bytes."""
    parts = estimate(sc) if parts is None else parts
    need = sum(parts.values())
    have = available_bytes() if available is None else available
    if need > have:
        worst = max(parts, key=parts.get)
        raise ScenarioError(f"the compiled scenario needs about {need / GiB:,.1f} GiB of memory "
                            f"({worst}: {parts[worst] / GiB:,.1f} GiB), more than the {have / GiB:,.1f} GiB "
                            f"available; use {HINTS[worst]}")
    return need
