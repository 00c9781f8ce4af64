"""Scenario: a fabric and a workload, read from TOML or built in Python, validated whole
before anything runs.

A scenario is plain data. `Scenario.from_toml(path)` / `Scenario.from_dict(d)` check every
field and raise ScenarioError naming the field (as a dotted path, e.g.
`workload[0].size`), what it got and what is allowed. The result is frozen: the engine
and every protocol get a validated copy and never re-read the file.

Sections (all optional but topology and a workload):

    name, description, seed
    [topology]  kind = star | multiplane-star | leaf-spine | fat-tree, sizes, rates, delays
    [switch]    buffer, threshold (static | dynamic), alpha, queue_limit, latency,
                cut_through, ecmp (flow | spray)
    [host]      latency, mtu, ecmp
    [ports]     scheduler (strict | dwrr), weights (8 ints), quantum
    [run]       until, ttl, trace (off | endpoints | hop), trace_capacity
    [pfc]       enabled, priorities, xoff (bytes | "dynamic"), alpha, xon_offset, headroom,
                quanta, response, deadlock_check; [pfc.watchdog] action, detect, restore
    [ecn]       enabled, priorities, kmin, kmax, pmax
    [roce]      ack_every, ack_prio, cnp_prio, rto, rto_max, retry_limit, cnp_interval, ecn
    [dcqcn]     enabled, g, f, alpha_timer, rate_timer, byte_counter, rai, rhai, min_rate, min_dec
    [hpcc]      enabled, eta, max_stage, w_ai, base_rtt, min_rate
    [ls]        tags, header (ethlink | roce), prio, ordering (strict | relaxed), coalesce,
                coalesce_wait, target_latency, timeout, max_size
    [cbfc]      enabled, priorities, cell, credits, update
    [uet]       spray, trim, trim_bytes, trim_prio, rto, window, retry_limit; [uet.nscc] enabled, base_rtt,
                target_delay, qa_threshold, alpha, fi, eta, gamma, delay_alpha, period,
                adjust_bytes, max_window
    [link]      ber, llr
    [[loadstore]] gpus, ops, mode (open | closed), rate, destinations (uniform | hotspot |
                neighbour), hot, hot_fraction, mix, sizes, fence_every, start, seed
    [[ls_op]]   src, dst, kind (load | store | store_ack | fadd | cas | fence), size, time, addr
    flows and workloads take transport (raw | roce | uet) and verb (write | send | read |
    write_imm | send_imm for roce; write for uet)
    [[flow]]    src, dst, size, start, prio
    [[workload]] kind = incast | permutation | alltoall, with their parameters

Values with units are numbers in base units or strings: "400G", "100ns", "16MiB".

Every entry point (TOML files, `--set`, `--grid`, `Scenario.from_dict`) goes through the
same typed readers (`_Section`): numbers must be finite (TOML `nan` and `inf` are refused),
times are at most MAX_TIME_PS and sizes at most MAX_SIZE_BYTES, so that sums of a few of
them still fit the engine's int64 picoseconds and bytes, and the memory the compiled
scenario will need is estimated (ethlink.budget) and checked before anything is built.
"""
from __future__ import annotations

import codecs
import copy
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import units

TOPOLOGY_KINDS = ("star", "multiplane-star", "leaf-spine", "fat-tree", "ring")
RING_ROUTING = ("shortest", "clockwise")
THRESHOLDS = ("static", "dynamic")
ECMP_MODES = ("flow", "spray")
SCHEDULERS = ("strict", "dwrr")
TRACE_LEVELS = ("off", "endpoints", "hop")
WORKLOAD_KINDS = ("incast", "permutation", "alltoall")
TRANSPORTS = ("raw", "roce", "uet")
VERBS = ("raw", "write", "send", "read", "write_imm", "send_imm")     # engine Verb order
ROCE_MTUS = (256, 512, 1024, 2048, 4096)                              # IBA path MTUs
MAX_MTU = 9000
# Upper bounds of every time and size field. Times are int64 picoseconds (at most 9.2e18,
# about 106 days); a bound of 1e18 ps (11.6 days of simulated time) leaves room for the
# sums the engine forms (a start plus delays and timeouts). Sizes are int64 bytes; 1 TiB
# (2**40) is beyond any message a fabric run could finish, and keeps byte x 8 x 1e12
# products of the ideal-time model far from overflow.
MAX_TIME_PS = 10**18
MAX_SIZE_BYTES = 2**40
INT64_MAX = 2**63 - 1


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the field and the fix."""


@dataclass(frozen=True)
class Topology:
    """[topology]: the fabric's shape, sizes, link rates and delays (docs/scenarios.md)."""
    kind: str = "star"
    hosts: int = 8                      # star, multiplane-star
    planes: int = 1                     # multiplane-star
    leaves: int = 4                     # leaf-spine
    hosts_per_leaf: int = 8
    spines: int = 0                     # 0: derived from oversubscription
    oversubscription: float = 1.0
    k: int = 4                          # fat-tree
    switches: int = 4                   # ring
    hosts_per_switch: int = 2           # ring
    routing: str = "shortest"           # ring: shortest | clockwise
    rate_bps: int = 400 * 10**9         # host links (and every link unless overridden)
    uplink_rate_bps: int = 0            # switch-switch links; 0: same as rate
    delay_ps: int = 100_000             # host-link propagation (about 20 m of fibre)
    fabric_delay_ps: int = 0            # switch-switch propagation; 0: same as delay


@dataclass(frozen=True)
class Switch:
    """[switch] (and [switch.tiers.X]): buffer, admission thresholds, latency, cut-through, ECMP."""
    buffer_bytes: int = 32 * 2**20
    threshold: str = "dynamic"
    alpha: float = 1.0
    queue_limit_bytes: int = 0          # static threshold; 0: the whole buffer
    latency_ps: int = 300_000
    cut_through: bool = False
    ecmp: str = "flow"
    tiers: tuple = ()                   # ((tier name, Switch), ...): per-tier settings

    def tier(self, name: str) -> "Switch":
        """The settings of switches in tier `name` (leaf, spine, agg, core)."""
        return dict(self.tiers).get(name, self)


TIERS = {"star": ("leaf",), "multiplane-star": ("leaf",), "ring": ("leaf",),
         "leaf-spine": ("leaf", "spine"), "fat-tree": ("leaf", "agg", "core")}


@dataclass(frozen=True)
class Host:
    """[host]: every NIC's receive latency, MTU and port choice."""
    latency_ps: int = 200_000
    mtu: int = 4096                     # payload bytes per frame
    ecmp: str = "flow"                  # how a multi-port NIC picks its port


@dataclass(frozen=True)
class Ports:
    """[ports]: the egress scheduler of every port (strict priority or DWRR)."""
    scheduler: str = "strict"
    weights: tuple[int, ...] = (1,) * 8
    quantum: int = 9216


@dataclass(frozen=True)
class Run:
    """[run]: horizon, hop limit, trace level and trace batch size."""
    until_ps: int = 0                   # 0: until no event is left
    ttl: int = 64
    trace: str = "off"
    trace_capacity: int = 1 << 14       # records per drain (a batch of the trace file)


@dataclass(frozen=True)
class Pfc:
    """IEEE 802.1Qbb PFC. xoff_bytes 0 means dynamic: alpha x free shared buffer."""
    enabled: bool = False
    priorities: tuple[int, ...] = (3,)
    xoff_bytes: int = 0
    alpha: float = 0.125
    xon_offset_bytes: int = 0           # 0: two maximum frames
    headroom_bytes: int = 0             # per priority group; 0: computed per port (see compile)
    headroom_pool_bytes: int = 0        # per switch; 0 ("auto"): every PG's headroom reserved
    quanta: int = 0xFFFF
    response_ps: int = 0
    watchdog: str = "off"               # off | drop | ignore
    detect_ps: int = 200_000_000        # 200 us
    restore_ps: int = 200_000_000
    deadlock_check_ps: int = 1_000_000_000   # 1 ms; 0 disables


@dataclass(frozen=True)
class Ecn:
    """RED-style ECN marking at switch egress queues of the given priorities."""
    enabled: bool = False
    priorities: tuple[int, ...] = (3,)
    kmin_bytes: int = 100 * 1024
    kmax_bytes: int = 400 * 1024
    pmax: float = 0.2


# RoCE retransmission timer: the IBA local ACK timeout is 4.096 us x 2^timeout, a 5-bit QP
# attribute (IBA vol. 1 9.7.6.1.3; Linux drivers/infiniband/hw/qib/qib_rc.c), 0 = infinite.
# Defaults in deployments: NCCL_IB_TIMEOUT 20 (NCCL src/transport/net_ib.cc
# NCCL_PARAM(IbTimeout, "IB_TIMEOUT", 20); 14 in early releases, then 18), Huawei HCCL
# HCCL_RDMA_TIMEOUT 20, Broadcom bnxt_re 16 (Linux commit 601577b). GPU fabrics run NCCL:
# 20, about 4.3 s.
IBA_TIMEOUT_DEFAULT = 20
IBA_TIMEOUT_UNIT_PS = 4_096_000


def iba_timeout_ps(exponent: int) -> int:
    """The IBA local ACK timeout in ps for a 5-bit exponent (0: infinite, returned as 0)."""
    return 0 if exponent == 0 else IBA_TIMEOUT_UNIT_PS << exponent


@dataclass(frozen=True)
class Roce:
    """RoCEv2 RC transport settings (csrc/roce.pxd)."""
    ack_every: int = 1                  # ACK every N in-order packets (and at message end)
    ack_prio: int = -1                  # -1: ACKs travel at the data's priority
    cnp_prio: int = 6
    timeout: int = IBA_TIMEOUT_DEFAULT   # IBA local ACK timeout exponent: 4.096 us x 2^timeout; 0 infinite
    rto_ps: int = 0                     # initial retransmission timeout, ps; 0: from `timeout`
    rto_max_ps: int = 0                 # backoff cap; 0: max(10 ms, the initial timeout)
    retry_limit: int = 7                # IBA retry_cnt (3 bits): consecutive timeouts before the QP errors
    cnp_interval_ps: int = 50_000_000   # 50 us (DCQCN paper; NVIDIA min_time_between_cnps)
    ecn: bool = True                    # data frames leave as ECT(0)


def rto_initial_ps(r: Roce) -> int:
    """The first retransmission timeout, ps (0: never): roce.rto, else the IBA value."""
    return r.rto_ps or iba_timeout_ps(r.timeout)


def rto_cap_ps(r: Roce) -> int:
    """The backoff cap, ps: roce.rto_max, else the larger of 10 ms and the initial timeout."""
    return r.rto_max_ps or max(10_000_000_000, rto_initial_ps(r))


@dataclass(frozen=True)
class Dcqcn:
    """DCQCN reaction point parameters (Zhu et al. 2015; defaults: PROTOCOLS.md)."""
    enabled: bool = False
    g: float = 1 / 256
    f: int = 5
    alpha_timer_ps: int = 55_000_000
    rate_timer_ps: int = 55_000_000
    byte_counter: int = 10 * 1024 * 1024
    rai_bps: int = 0                    # 0: line rate / 20
    rhai_bps: int = 0                   # 0: 10 x R_AI
    min_rate_bps: int = 1_000_000       # 1 Mb/s (NVIDIA rpg_min_rate)
    min_dec: float = 0.5                # a CNP at most halves the rate (rpg_min_dec_fac 50%)


@dataclass(frozen=True)
class Hpcc:
    """HPCC sender parameters (Li et al. 2019, Algorithm 1; csrc/hpcc.pxd)."""
    enabled: bool = False
    eta: float = 0.95                   # target utilization (paper: 95%)
    max_stage: int = 5                  # additive steps before a multiplicative one (paper: 5)
    w_ai_bytes: int = 0                 # W_AI; 0: W_init (1 - eta) / 100 (= line x T / 2000 at eta 0.95)
    base_rtt_ps: int = 0                # T; 0: the longest base RTT of the RoCE flows' paths
    min_rate_bps: int = 100_000_000     # window floor min_rate x T (HPCC ns-3 RdmaHw MinRate 100 Mb/s)


@dataclass(frozen=True)
class LoadStore:
    """The GPUs' Load/Store engines (csrc/loadstore.pxd)."""
    tags: int = 64                      # outstanding transactions per GPU
    header: str = "ethlink"             # ethlink (compact v1) | roce (RoCEv2 frames)
    prio: int = 5                       # traffic class of Load/Store frames
    ordering: str = "strict"            # strict (one path per destination) | relaxed (sprayed)
    coalesce_bytes: int = 0             # largest coalesced frame; 0: off
    coalesce_wait_ps: int = 50_000      # 50 ns
    target_latency_ps: int = 100_000    # memory access at the target: 100 ns
    timeout_ps: int = 20_000_000        # 20 us end-to-end retry
    max_size: int = 256                 # largest operation (UALink: 256 B)


@dataclass(frozen=True)
class Cbfc:
    """Credit-based flow control (csrc/cbfc.pxd)."""
    enabled: bool = False
    priorities: tuple[int, ...] = (3,)
    cell: int = 64                      # bytes per credit
    credits_bytes: int = 0              # receiver room per link and priority; 0: cover the credit loop
    update_bytes: int = 0               # freed bytes that trigger an update; 0: one maximum frame


UET_DATA_HEADER_BYTES = 106            # csrc/uet.pxd UET_DATA_BASE_BYTES: a data frame without payload


@dataclass(frozen=True)
class Nscc:
    """[uet.nscc]: NSCC, UET's sender congestion control (csrc/nscc.pxd). Zero means the
    value UEC's reference htsim derives for this network (initNsccParams, scaled from a
    100 Gb/s, 12 us reference); ethlink.sim.nscc_params computes them."""
    enabled: bool = False
    base_rtt_ps: int = 0                # network base RTT; 0: the unloaded RTT of the longest path
    target_delay_ps: int = 6_000_000    # target queueing delay, 6 us (htsim _target_Qdelay)
    qa_threshold_ps: int = 0            # quick adapt above this average delay; 0: 4 x target
    alpha: float = 0.0                  # proportional increase, bytes per ps below target; 0: 4 a b MSS / target
    fi: float = 0.0                     # fair increase; 0: 5 a
    eta: float = 0.0                    # additive bytes per period; 0: 0.15 MSS a
    gamma: float = 0.8                  # multiplicative decrease gain
    delay_alpha: float = 0.0125         # EWMA gain of the average queueing delay
    period_ps: int = 12_000_000         # adjustment period (the 12 us reference RTT)
    adjust_bytes: int = 0               # adjustment threshold and largest step, bytes; 0: 16000 b
    max_window: float = 1.5             # window ceiling and start, in bandwidth-delay products


@dataclass(frozen=True)
class Uet:
    """Ultra Ethernet transport settings (csrc/uet.pxd; [uet])."""
    spray: bool = True                  # per-packet entropy: UET packets sprayed over equal-cost paths
    trim: bool = False                  # switches trim UET data frames that fail admission
    trim_bytes: int = UET_DATA_HEADER_BYTES     # a trimmed frame keeps this many bytes (headers)
    trim_prio: int = 7                  # priority (traffic class) trimmed frames are forwarded at
    rto_ps: int = 100_000_000           # per-packet retransmission timeout: 100 us
    window_bytes: int = 0               # outstanding bytes per QP without NSCC; 0: unlimited
    retry_limit: int = 1000             # retransmissions in a row without a newly acknowledged PSN before a QP gives up
    nscc: Nscc = field(default_factory=Nscc)


@dataclass(frozen=True)
class Link:
    """Bit errors and link-level retry on every link (csrc/llr.pxd)."""
    ber: float = 0.0
    llr: bool = False


@dataclass(frozen=True)
class FlowSpec:
    """One [[flow]]: a message from host `src` to `dst` (indices), `size` bytes."""
    src: int
    dst: int
    size: int
    start_ps: int = 0
    prio: int = 0
    transport: str = "raw"
    verb: str = "raw"


@dataclass(frozen=True)
class Scenario:
    """A validated, frozen scenario: a fabric and its traffic. Build it with `from_toml`,
    `from_dict` or `ethlink.scenarios.load`; every section is a frozen dataclass."""
    name: str = "scenario"
    description: str = ""
    seed: int = 1
    topology: Topology = field(default_factory=Topology)
    switch: Switch = field(default_factory=Switch)
    host: Host = field(default_factory=Host)
    ports: Ports = field(default_factory=Ports)
    run: Run = field(default_factory=Run)
    pfc: Pfc = field(default_factory=Pfc)
    ecn: Ecn = field(default_factory=Ecn)
    roce: Roce = field(default_factory=Roce)
    dcqcn: Dcqcn = field(default_factory=Dcqcn)
    hpcc: Hpcc = field(default_factory=Hpcc)
    ls: LoadStore = field(default_factory=LoadStore)
    cbfc: Cbfc = field(default_factory=Cbfc)
    link: Link = field(default_factory=Link)
    uet: Uet = field(default_factory=Uet)
    loadstore: tuple[dict, ...] = ()
    ls_ops: tuple[dict, ...] = ()
    flows: tuple[FlowSpec, ...] = ()
    workloads: tuple[dict, ...] = ()
    source: dict = field(default_factory=dict, compare=False, repr=False)

    # -----------------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> "Scenario":
        """Read and validate a TOML scenario file; `overrides` are `--set` items
        ("topology.hosts=16"). Raises ScenarioError naming the field."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ScenarioError(f"cannot read scenario file {path}: {exc.strerror}") from exc
        text = _toml_text(raw, path)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc
        except RecursionError:
            raise ScenarioError(f"{path}: not valid TOML: arrays or tables nested too deep") from None
        return cls.from_dict(data, overrides)

    @classmethod
    def from_dict(cls, data: dict, overrides: list[str] | tuple[str, ...] = ()) -> "Scenario":
        """Validate a scenario given as the dict a TOML file would parse to (values with
        units as numbers or strings such as "400G"); `overrides` as in from_toml."""
        data = copy.deepcopy(data)
        for item in overrides:
            apply_override(data, item)
        return _build(data)

    def with_overrides(self, *overrides: str) -> "Scenario":
        """A new scenario: this one's source with `--set`-style overrides applied."""
        return Scenario.from_dict(self.source, overrides)

    @property
    def host_names(self) -> list[str]:
        """The hosts' names, "h0" .. "hN-1", in index order."""
        return [f"h{i}" for i in range(n_hosts(self.topology))]


def _toml_text(raw: bytes, path: Path) -> str:
    """The text of a scenario file: UTF-8 (TOML 1.0 requires it), a leading UTF-8 byte
    order mark skipped; anything else is refused, naming the first bad byte."""
    for bom, name in ((codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
                      (codecs.BOM_UTF32_LE, "UTF-32")):
        if raw.startswith(bom):
            raise ScenarioError(f"{path}: the file is {name} text; TOML files are UTF-8: save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ScenarioError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
                            f"TOML files are UTF-8: save it as UTF-8") from None


# ---------------------------------------------------------------------------------------
# Overrides: --set topology.hosts=16, --set workload.0.size=2MiB

def apply_override(data: dict, item: str) -> None:
    """Apply one `--set key=value` item to a scenario dict in place (the value parsed as
    TOML, else kept as a string); list items by index: workload.0.size."""
    if "=" not in item:
        raise ScenarioError(f"--set {item!r}: expected key=value, e.g. --set topology.hosts=16")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    parts = key.strip().split(".")
    if not all(parts):
        raise ScenarioError(f"--set {item!r}: {key.strip()!r} is not a dotted key such as topology.hosts")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, parts[: i + 1])
        else:
            if part == "workload" and part not in node:
                raise ScenarioError(f"--set {key}: the scenario has no [[workload]]")
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            here = ".".join(parts[: i + 1])
            raise ScenarioError(f"--set {key}: {here} is a value ({node!r}), not a table, so it has no key "
                                f"{parts[i + 1]!r}; set it with --set {here}=...")
    last = parts[-1]
    if isinstance(node, list):
        idx = _list_index(node, last, parts)
        node[idx] = value
    else:
        node[last] = value


def _list_index(lst: list, part: str, path: list[str]) -> int:
    try:
        idx = int(part)
    except ValueError:
        raise ScenarioError(f"--set {'.'.join(path)}: {part!r} must be a list index") from None
    if not -len(lst) <= idx < len(lst):
        raise ScenarioError(f"--set {'.'.join(path)}: index {idx} out of range (list has {len(lst)})")
    return idx


def _list_item(lst: list, part: str, path: list[str]):
    return lst[_list_index(lst, part, path)]


# ---------------------------------------------------------------------------------------
# Reading sections with exact messages.

class _Section:
    """Typed reads from one table, remembering which keys were used."""

    def __init__(self, data: Any, where: str):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ScenarioError(f"{where}: expected a table, got {type(data).__name__}")
        self.data, self.where, self.used = data, where, set()

    def _get(self, key, default):
        self.used.add(key)
        return self.data.get(key, default)

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _conv(self, key, default, fn):
        v = self._get(key, None)
        if v is None:
            return default
        try:
            return fn(v)
        except units.UnitError as exc:
            raise ScenarioError(f"{self.path(key)}: {exc}") from None

    def _at_most(self, key, v, hi, what, unit, shown):
        if v > hi:
            raise ScenarioError(f"{self.path(key)}: {what} must be at most {shown} ({hi} {unit}), got {v} {unit}")

    def rate(self, key, default, *, allow_zero=False):
        v = self._conv(key, default, units.rate_bps)
        if v < 0 or (v == 0 and not allow_zero):
            raise ScenarioError(f"{self.path(key)}: a rate must be positive, got {v} bit/s; write e.g. \"400G\"")
        if v > 10**14:
            raise ScenarioError(f"{self.path(key)}: {v} bit/s is beyond any Ethernet link (max 100 Tb/s)")
        return v

    def time(self, key, default, *, positive=False):
        v = self._conv(key, default, units.time_ps)
        if v < 0 or (positive and v == 0):
            raise ScenarioError(f"{self.path(key)}: a time must be {'positive' if positive else '>= 0'}, got {v} ps")
        self._at_most(key, v, MAX_TIME_PS, "a time", "ps", "1e6 s, 11.6 days")
        return v

    def size(self, key, default, *, lo=1, hi=None):
        v = self._conv(key, default, units.size_bytes)
        if v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise ScenarioError(f"{self.path(key)}: size must be {rng} bytes, got {v}")
        self._at_most(key, v, MAX_SIZE_BYTES, "a size", "B", "1 TiB")
        return v

    def int(self, key, default, *, lo=None, hi=None):
        v = self._get(key, None)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise ScenarioError(f"{self.path(key)}: expected an integer, got {type(v).__name__} {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else (f"<= {hi}" if lo is None else f"in {lo}..{hi}")
            raise ScenarioError(f"{self.path(key)}: must be {rng}, got {v}")
        if not -INT64_MAX - 1 <= v <= INT64_MAX:
            raise ScenarioError(f"{self.path(key)}: {v} does not fit a 64-bit integer")
        return v

    def float(self, key, default, *, lo=None, hi=None):
        v = self._get(key, None)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ScenarioError(f"{self.path(key)}: expected a number, got {type(v).__name__} {v!r}")
        f = float(v) if abs(v) < 1e300 else math.inf
        if not math.isfinite(f):
            raise ScenarioError(f"{self.path(key)}: expected a finite number, got {v!r}")
        if (lo is not None and f <= lo) or (hi is not None and f > hi):
            rng = f"<= {hi}" if lo is None else f"in ({lo}, {hi}]"
            raise ScenarioError(f"{self.path(key)}: must be {rng}, got {v}")
        return f

    def bool(self, key, default):
        v = self._get(key, None)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise ScenarioError(f"{self.path(key)}: expected true or false, got {v!r}")
        return v

    def str(self, key, default):
        v = self._get(key, None)
        if v is None:
            return default
        if not isinstance(v, str):
            raise ScenarioError(f"{self.path(key)}: expected a string, got {type(v).__name__} {v!r}")
        return v

    def choice(self, key, default, allowed):
        v = self.str(key, default)
        if v not in allowed:
            raise ScenarioError(f"{self.path(key)}: {v!r} is not one of {', '.join(allowed)}")
        return v

    def done(self):
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            import difflib                  # only for this message: not at every start (0.8 ms)

            k = str(unknown[0])
            close = difflib.get_close_matches(k, sorted(self.used), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(self.used))}"
            raise ScenarioError(f"{self.path(k)}: unknown key{hint}")


def n_hosts(t: Topology) -> int:
    """How many hosts the topology has."""
    if t.kind in ("star", "multiplane-star"):
        return t.hosts
    if t.kind == "leaf-spine":
        return t.leaves * t.hosts_per_leaf
    if t.kind == "ring":
        return t.switches * t.hosts_per_switch
    return t.k ** 3 // 4


def _topology(sec: _Section) -> Topology:
    d = Topology()
    kind = sec.choice("kind", d.kind, TOPOLOGY_KINDS)
    rate = sec.rate("rate", d.rate_bps)
    t = Topology(
        kind=kind,
        hosts=sec.int("hosts", d.hosts, lo=2, hi=1 << 20),
        planes=sec.int("planes", d.planes, lo=1, hi=64),
        leaves=sec.int("leaves", d.leaves, lo=1, hi=4096),
        hosts_per_leaf=sec.int("hosts_per_leaf", d.hosts_per_leaf, lo=1, hi=4096),
        spines=sec.int("spines", d.spines, lo=0, hi=4096),
        oversubscription=sec.float("oversubscription", d.oversubscription, lo=0, hi=1024),
        k=sec.int("k", d.k, lo=2, hi=128),
        switches=sec.int("switches", d.switches, lo=3, hi=1024),
        hosts_per_switch=sec.int("hosts_per_switch", d.hosts_per_switch, lo=1, hi=1024),
        routing=sec.choice("routing", d.routing, RING_ROUTING),
        rate_bps=rate,
        uplink_rate_bps=sec.rate("uplink_rate", 0, allow_zero=True) or rate,
        delay_ps=sec.time("delay", d.delay_ps),
        fabric_delay_ps=0,
    )
    fabric_delay = sec.time("fabric_delay", 0) or t.delay_ps
    sec.done()
    if kind == "fat-tree" and t.k % 2:
        raise ScenarioError(f"topology.k: a fat-tree needs an even k, got {t.k}")
    if kind == "leaf-spine" and t.leaves * t.hosts_per_leaf < 2:
        raise ScenarioError("topology: a leaf-spine needs at least 2 hosts (leaves x hosts_per_leaf)")
    return Topology(**{**t.__dict__, "fabric_delay_ps": fabric_delay})


def spine_count(t: Topology) -> int:
    """Spines of a leaf-spine: given, or the fewest that meet the oversubscription."""
    if t.spines:
        return t.spines
    need = t.hosts_per_leaf * t.rate_bps / (t.oversubscription * t.uplink_rate_bps)
    return max(1, int(-(-need // 1)))


def _switch(sec: _Section, kind: str, base: Switch | None = None, allow_tiers: bool = True) -> Switch:
    d = base or Switch()
    buf = sec.size("buffer", d.buffer_bytes, lo=MIN_BUFFER)
    s = Switch(
        buffer_bytes=buf,
        threshold=sec.choice("threshold", d.threshold, THRESHOLDS),
        alpha=sec.float("alpha", d.alpha, lo=0, hi=1024),
        queue_limit_bytes=sec.size("queue_limit", buf if base is None or "buffer" in sec.data else d.queue_limit_bytes,
                                   lo=MIN_BUFFER),
        latency_ps=sec.time("latency", d.latency_ps),
        cut_through=sec.bool("cut_through", d.cut_through),
        ecmp=sec.choice("ecmp", d.ecmp, ECMP_MODES),
    )
    tiers = []
    if allow_tiers:
        raw = sec._get("tiers", None) or {}
        if not isinstance(raw, dict):
            raise ScenarioError(f"{sec.path('tiers')}: expected tables such as [switch.tiers.spine]")
        for name, table in raw.items():
            if name not in TIERS[kind]:
                raise ScenarioError(f"{sec.path('tiers')}.{name}: a {kind} has switch tiers "
                                    f"{', '.join(TIERS[kind])}, not {name!r}")
            tiers.append((name, _switch(_Section(table, f"{sec.path('tiers')}.{name}"), kind, s, False)))
    sec.done()
    if s.queue_limit_bytes > s.buffer_bytes:
        raise ScenarioError(f"{sec.path('queue_limit')}: {s.queue_limit_bytes} B exceeds {sec.path('buffer')} "
                            f"({s.buffer_bytes} B); a queue cannot hold more than the buffer")
    return Switch(**{**s.__dict__, "tiers": tuple(tiers)})


MIN_BUFFER = 2 * 9216   # room for at least two maximum frames


def _host(sec: _Section) -> Host:
    d = Host()
    h = Host(
        latency_ps=sec.time("latency", d.latency_ps),
        mtu=sec.size("mtu", d.mtu, lo=64, hi=MAX_MTU),
        ecmp=sec.choice("ecmp", d.ecmp, ECMP_MODES),
    )
    sec.done()
    return h


def _ports(sec: _Section) -> Ports:
    d = Ports()
    sched = sec.choice("scheduler", d.scheduler, SCHEDULERS)
    weights = sec._get("weights", None)
    if weights is None:
        weights = d.weights
    if (not isinstance(weights, list) and not isinstance(weights, tuple)) or len(weights) != 8 \
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 or w > 1000 for w in weights):
        raise ScenarioError(f"ports.weights: expected 8 integers in 1..1000 (one per priority 0..7), got {weights!r}")
    quantum = sec.size("quantum", d.quantum, lo=MAX_MTU + 216, hi=1 << 20)
    sec.done()
    return Ports(scheduler=sched, weights=tuple(weights), quantum=quantum)


def _run(sec: _Section) -> Run:
    d = Run()
    r = Run(
        until_ps=sec.time("until", d.until_ps),
        ttl=sec.int("ttl", d.ttl, lo=2, hi=255),
        trace=sec.choice("trace", d.trace, TRACE_LEVELS),
        trace_capacity=sec.int("trace_capacity", d.trace_capacity, lo=1024, hi=1 << 26),
    )
    sec.done()
    return r


def _priorities(sec: _Section, key: str, default):
    v = sec._get(key, None)
    if v is None:
        return default
    if not isinstance(v, list) or not v or any(isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 7 for p in v):
        raise ScenarioError(f"{sec.path(key)}: expected a non-empty list of priorities 0..7, got {v!r}")
    if len(set(v)) != len(v):
        raise ScenarioError(f"{sec.path(key)}: priorities repeat: {v!r}")
    return tuple(sorted(v))


WATCHDOG_ACTIONS = ("off", "drop", "ignore")


def _size_or_word(sec: _Section, key: str, word: str) -> int:
    """A size in bytes (at least 64), or `word` (or absent) for 0: the computed default."""
    v = sec._get(key, None)
    if v is None or v == word:
        return 0
    return sec.size(key, None, lo=64)


def _pfc(sec: _Section) -> Pfc:
    d = Pfc()
    xoff_bytes = _size_or_word(sec, "xoff", "dynamic")
    pool_bytes = _size_or_word(sec, "headroom_pool", "auto")
    wd = _Section(sec._get("watchdog", None), sec.path("watchdog"))
    p = Pfc(
        enabled=sec.bool("enabled", True),
        priorities=_priorities(sec, "priorities", d.priorities),
        xoff_bytes=xoff_bytes,
        alpha=sec.float("alpha", d.alpha, lo=0, hi=64),
        xon_offset_bytes=sec.size("xon_offset", 0, lo=0),
        headroom_bytes=sec.size("headroom", 0, lo=0),
        headroom_pool_bytes=pool_bytes,
        quanta=sec.int("quanta", d.quanta, lo=1, hi=0xFFFF),
        response_ps=sec.time("response", d.response_ps),
        watchdog=wd.choice("action", d.watchdog, WATCHDOG_ACTIONS),
        detect_ps=wd.time("detect", d.detect_ps, positive=True),
        restore_ps=wd.time("restore", d.restore_ps, positive=True),
        deadlock_check_ps=sec.time("deadlock_check", d.deadlock_check_ps),
    )
    wd.done()
    sec.done()
    return p


ROCE_MAX_HEADER_BYTES = 86             # csrc/roce.pxd: base 66 + RETH 16 + ImmDt 4 (WRITE ONLY with immediate)
HPCC_INT_MAX_BYTES = 4 + 16 * 5        # csrc/hpcc.pxd: INT header + INT_MAX_HOPS records


def _transports(flows, workloads) -> set[str]:
    """The transports a scenario's [[flow]] and [[workload]] tables use ("raw", "roce", "uet")."""
    return {f.transport for f in flows} | {w["transport"] for w in workloads}


def max_frame_bytes(sc: "Scenario") -> int:
    """The largest frame (FCS included) a host of this scenario can send: a full-MTU RoCE
    WRITE ONLY with RETH and ImmDt, padded to 4 B (with HPCC's INT header and its most
    records), a UET data frame when the scenario uses UET, a coalesced Load/Store frame.
    PFC headroom, the XON offset, the dynamic XOFF floor and CBFC credits are sized from it:
    a smaller figure would let a frame arrive that the headroom was not sized for."""
    mtu = sc.host.mtu
    largest = ROCE_MAX_HEADER_BYTES + mtu + (-mtu % 4) + (HPCC_INT_MAX_BYTES if sc.hpcc.enabled else 0)
    if "uet" in _transports(sc.flows, sc.workloads):
        largest = max(largest, UET_DATA_HEADER_BYTES + mtu)
    if sc.loadstore or sc.ls_ops:
        largest = max(largest, sc.ls.coalesce_bytes)
    return largest


def min_round_trip_ps(sc: "Scenario") -> int:
    """A floor under every round trip of the fabric: a minimum frame from a host through
    one switch (the fastest tier's latency) to another host, and a minimum frame back,
    each with its links' delay, serialization at the fastest rate and the NIC's latency."""
    t = sc.topology
    switch_ps = min([sc.switch.latency_ps] + [sw.latency_ps for _, sw in sc.switch.tiers])
    rate = max(t.rate_bps, t.uplink_rate_bps or 0)
    wire = -(-(MIN_WIRE_BYTES * 8 * 10**12) // rate)
    return 2 * (2 * t.delay_ps + switch_ps + sc.host.latency_ps + 2 * wire)


MIN_WIRE_BYTES = 84                     # a 64 B frame + 8 B preamble + 12 B inter-frame gap


def _check_timers(sc: "Scenario") -> None:
    """A retransmission timeout below the fabric's shortest round trip fires before any
    acknowledgement can return: every packet would be sent again, forever (refused)."""
    floor = min_round_trip_ps(sc)
    uses = _transports(sc.flows, sc.workloads)
    timers = [("roce.rto", sc.roce.rto_ps if "roce" in uses else 0, "or leave it out for roce.timeout's IBA value"),
              ("uet.rto", sc.uet.rto_ps if "uet" in uses else 0, f"default {units.fmt_time(Uet().rto_ps)}"),
              ("ls.timeout", sc.ls.timeout_ps if sc.loadstore or sc.ls_ops else 0, "or 0: never time out")]
    for name, value, hint in timers:
        if 0 < value < floor:
            raise ScenarioError(
                f"{name}: {units.fmt_time(value)} is below the fabric's shortest round trip "
                f"({units.fmt_time(floor)}: a 64 B frame through one switch and back); every packet would "
                f"time out before its acknowledgement could return and be sent again. Use {name} >= "
                f"{units.fmt_time(floor)} ({hint})")


def _check_pfc(p: Pfc, host: Host, frame: int) -> None:
    """XON must be reachable: a static XOFF above the hysteresis (csrc/pfc.pxd). `frame`:
    the largest frame of the scenario (max_frame_bytes)."""
    xon_offset = p.xon_offset_bytes or 2 * frame
    default = "" if p.xon_offset_bytes else f" (default: two of the largest frames, {frame} B at host.mtu {host.mtu})"
    if p.xoff_bytes and p.xoff_bytes <= xon_offset:
        raise ScenarioError(
            f"pfc.xoff: {p.xoff_bytes} B is not above pfc.xon_offset ({xon_offset} B{default}); XON is "
            f"sent when a port's bytes fall to xoff - xon_offset, so the pause could never lift. "
            f"Use pfc.xoff > {xon_offset} B, a smaller pfc.xon_offset, or pfc.xoff = \"dynamic\"")


def _ecn(sec: _Section) -> Ecn:
    d = Ecn()
    e = Ecn(
        enabled=sec.bool("enabled", True),
        priorities=_priorities(sec, "priorities", d.priorities),
        kmin_bytes=sec.size("kmin", d.kmin_bytes, lo=0),
        kmax_bytes=sec.size("kmax", d.kmax_bytes, lo=1),
        pmax=sec.float("pmax", d.pmax, lo=0, hi=1),
    )
    sec.done()
    if e.kmin_bytes >= e.kmax_bytes:
        raise ScenarioError(f"ecn.kmin ({e.kmin_bytes} B) must be below ecn.kmax ({e.kmax_bytes} B)")
    return e


def _roce(sec: _Section) -> Roce:
    d = Roce()
    r = Roce(
        ack_every=sec.int("ack_every", d.ack_every, lo=1, hi=1 << 16),
        ack_prio=sec.int("ack_prio", d.ack_prio, lo=-1, hi=7),
        cnp_prio=sec.int("cnp_prio", d.cnp_prio, lo=0, hi=7),
        timeout=sec.int("timeout", d.timeout, lo=0, hi=31),
        rto_ps=sec.time("rto", d.rto_ps, positive="rto" in sec.data),
        rto_max_ps=sec.time("rto_max", d.rto_max_ps, positive="rto_max" in sec.data),
        retry_limit=sec.int("retry_limit", d.retry_limit, lo=0, hi=7),
        cnp_interval_ps=sec.time("cnp_interval", d.cnp_interval_ps),
        ecn=sec.bool("ecn", d.ecn),
    )
    sec.done()
    if "timeout" in sec.data and "rto" in sec.data:
        raise ScenarioError("roce.rto: give the retransmission timeout either as roce.timeout (the IBA "
                            "exponent, 4.096 us x 2^timeout) or as roce.rto (a time), not both")
    initial = r.rto_ps or iba_timeout_ps(r.timeout)
    if r.rto_max_ps and initial and r.rto_max_ps < initial:
        src = "roce.rto" if r.rto_ps else f"roce.timeout {r.timeout}"
        raise ScenarioError(f"roce.rto_max ({r.rto_max_ps} ps) must be >= the initial timeout ({src}: {initial} ps)")
    return r


def _dcqcn(sec: _Section) -> Dcqcn:
    d = Dcqcn()
    r = Dcqcn(
        enabled=sec.bool("enabled", True),
        g=sec.float("g", d.g, lo=0, hi=1),
        f=sec.int("f", d.f, lo=1, hi=1000),
        alpha_timer_ps=sec.time("alpha_timer", d.alpha_timer_ps, positive=True),
        rate_timer_ps=sec.time("rate_timer", d.rate_timer_ps, positive=True),
        byte_counter=sec.size("byte_counter", d.byte_counter, lo=64),
        rai_bps=sec.rate("rai", 0, allow_zero=True),
        rhai_bps=sec.rate("rhai", 0, allow_zero=True),
        min_rate_bps=sec.rate("min_rate", d.min_rate_bps),
        min_dec=sec.float("min_dec", d.min_dec, lo=0, hi=1),
    )
    sec.done()
    return r


def _hpcc(sec: _Section) -> Hpcc:
    d = Hpcc()
    r = Hpcc(
        enabled=sec.bool("enabled", True),
        eta=sec.float("eta", d.eta, lo=0, hi=1),
        max_stage=sec.int("max_stage", d.max_stage, lo=0, hi=1000),
        w_ai_bytes=sec.size("w_ai", 0, lo=1 if "w_ai" in sec.data else 0),
        base_rtt_ps=sec.time("base_rtt", d.base_rtt_ps, positive="base_rtt" in sec.data),
        min_rate_bps=sec.rate("min_rate", d.min_rate_bps),
    )
    sec.done()
    return r


LS_HEADERS = ("ethlink", "roce")
LS_ORDERING = ("strict", "relaxed")
LS_KINDS = ("load", "store", "store_ack", "fadd", "cas", "fence")     # engine LsKind order
LS_MODES = ("open", "closed")
LS_DESTINATIONS = ("uniform", "hotspot", "neighbour")


def _ls(sec: _Section) -> LoadStore:
    d = LoadStore()
    r = LoadStore(
        tags=sec.int("tags", d.tags, lo=1, hi=1 << 20),
        header=sec.choice("header", d.header, LS_HEADERS),
        prio=sec.int("prio", d.prio, lo=0, hi=7),
        ordering=sec.choice("ordering", d.ordering, LS_ORDERING),
        coalesce_bytes=sec.size("coalesce", 0, lo=0, hi=MAX_MTU),
        coalesce_wait_ps=sec.time("coalesce_wait", d.coalesce_wait_ps),
        target_latency_ps=sec.time("target_latency", d.target_latency_ps),
        timeout_ps=sec.time("timeout", d.timeout_ps),
        max_size=sec.size("max_size", d.max_size, lo=1, hi=4096),
    )
    sec.done()
    if 0 < r.coalesce_bytes < 128:
        raise ScenarioError(f"ls.coalesce: {r.coalesce_bytes} B cannot hold two transactions; use 0 (off) or >= 128")
    return r


def _cbfc(sec: _Section) -> Cbfc:
    d = Cbfc()
    c = Cbfc(
        enabled=sec.bool("enabled", True),
        priorities=_priorities(sec, "priorities", d.priorities),
        cell=sec.size("cell", d.cell, lo=16, hi=4096),
        credits_bytes=sec.size("credits", 0, lo=0),
        update_bytes=sec.size("update", 0, lo=0),
    )
    sec.done()
    return c


def _check_cbfc(c: Cbfc, host: Host, frame: int) -> None:
    if c.credits_bytes and c.credits_bytes < 2 * frame:
        raise ScenarioError(f"cbfc.credits: {c.credits_bytes} B cannot hold two maximum frames "
                            f"({frame} B each at host.mtu {host.mtu}); the link could not keep moving. "
                            f"Use at least {2 * frame} B, or 0 for the default")
    if c.credits_bytes and c.update_bytes and c.update_bytes > c.credits_bytes // 2:
        raise ScenarioError(f"cbfc.update: {c.update_bytes} B must be at most half of cbfc.credits "
                            f"({c.credits_bytes} B), or credits would wait for an update that never comes")


def _uet(sec: _Section) -> Uet:
    d = Uet()
    u = Uet(
        spray=sec.bool("spray", d.spray),
        trim=sec.bool("trim", d.trim),
        trim_bytes=sec.int("trim_bytes", d.trim_bytes, lo=64, hi=UET_DATA_HEADER_BYTES),
        trim_prio=sec.int("trim_prio", d.trim_prio, lo=0, hi=7),
        rto_ps=sec.time("rto", d.rto_ps, positive=True),
        window_bytes=sec.size("window", d.window_bytes, lo=0),
        retry_limit=sec.int("retry_limit", d.retry_limit, lo=1, hi=2**31 - 1),
        nscc=_nscc(_Section(sec._get("nscc", None), sec.path("nscc"))),
    )
    sec.done()
    if u.nscc.enabled and u.window_bytes:
        raise ScenarioError("uet.window: NSCC (uet.nscc.enabled) sets the window; remove uet.window "
                            "or turn NSCC off")
    return u


def _nscc(sec: _Section) -> Nscc:
    d = Nscc()
    n = Nscc(
        enabled=sec.bool("enabled", True if sec.data else d.enabled),
        base_rtt_ps=sec.time("base_rtt", d.base_rtt_ps),
        target_delay_ps=sec.time("target_delay", d.target_delay_ps, positive=True),
        qa_threshold_ps=sec.time("qa_threshold", d.qa_threshold_ps),
        alpha=sec.float("alpha", d.alpha, lo=0),
        fi=sec.float("fi", d.fi, lo=0),
        eta=sec.float("eta", d.eta, lo=0),
        gamma=sec.float("gamma", d.gamma, lo=0, hi=1),
        delay_alpha=sec.float("delay_alpha", d.delay_alpha, lo=0, hi=1),
        period_ps=sec.time("period", d.period_ps, positive=True),
        adjust_bytes=sec.size("adjust_bytes", d.adjust_bytes, lo=0),
        max_window=sec.float("max_window", d.max_window, lo=0.1, hi=100),
    )
    sec.done()
    return n


def _link(sec: _Section) -> Link:
    ber = sec.float("ber", 0.0, hi=0.01)
    if ber < 0:
        raise ScenarioError(f"link.ber: a bit error rate is >= 0, got {ber}")
    r = Link(ber=ber, llr=sec.bool("llr", False))
    sec.done()
    return r


def _ls_stream(sec: _Section, count: int, ls: LoadStore) -> dict:
    w: dict = {}
    gpus = sec._get("gpus", None)
    if gpus is None or gpus == "all":
        w["gpus"] = tuple(range(count))
    elif isinstance(gpus, list) and gpus:
        w["gpus"] = tuple(host_index(g, f"{sec.path('gpus')}[{i}]", count) for i, g in enumerate(gpus))
    else:
        raise ScenarioError(f"{sec.path('gpus')}: expected \"all\" or a list of GPUs such as [\"h0\", \"h1\"]")
    w["ops"] = sec.int("ops", 1000, lo=1, hi=10**8)
    w["mode"] = sec.choice("mode", "closed", LS_MODES)
    w["rate"] = sec.float("rate", 1e8, lo=0, hi=1e12)       # ops/s per GPU (open loop)
    w["destinations"] = sec.choice("destinations", "uniform", LS_DESTINATIONS)
    w["hot"] = host_index(sec._get("hot", 0), sec.path("hot"), count)
    w["hot_fraction"] = sec.float("hot_fraction", 0.5, lo=0, hi=1)
    mix = sec._get("mix", {"load": 0.5, "store": 0.5})
    if not isinstance(mix, dict) or not mix:
        raise ScenarioError(f"{sec.path('mix')}: expected a table such as {{load = 0.5, store = 0.5}}")
    for k, v in mix.items():
        if k not in LS_KINDS or k == "fence":
            raise ScenarioError(f"{sec.path('mix')}.{k}: unknown operation; use {', '.join(LS_KINDS[:-1])}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1e300:
            raise ScenarioError(f"{sec.path('mix')}.{k}: expected a finite weight >= 0, got {v!r}")
    if sum(mix.values()) <= 0:
        raise ScenarioError(f"{sec.path('mix')}: weights sum to 0")
    w["mix"] = dict(mix)
    sizes = sec._get("sizes", [64])
    if not isinstance(sizes, list) or not sizes:
        raise ScenarioError(f"{sec.path('sizes')}: expected a list of sizes in bytes, e.g. [64, 128, 256]")
    w["sizes"] = tuple(_ls_size(s, f"{sec.path('sizes')}[{i}]", ls) for i, s in enumerate(sizes))
    w["fence_every"] = sec.int("fence_every", 0, lo=0)
    w["start_ps"] = sec.time("start", 0)
    w["seed"] = sec.int("seed", 0, lo=0)
    sec.done()
    last_issue = w["start_ps"] + (w["ops"] - 1) * 10**12 / w["rate"]
    if w["mode"] == "open" and last_issue > MAX_TIME_PS:
        slowest = (w["ops"] - 1) * 10**12 / (MAX_TIME_PS - w["start_ps"])
        raise ScenarioError(f"{sec.path('rate')}: {w['ops']} operations at {w['rate']:g} ops/s end after "
                            f"{last_issue / 10**12:.3g} s, beyond the longest simulated time (1e6 s); "
                            f"use a rate of at least {slowest:.3g} ops/s or fewer ops")
    if w["destinations"] == "uniform" and len(w["gpus"]) >= 1 and count < 2:
        raise ScenarioError(f"{sec.where}: uniform destinations need at least 2 GPUs")
    return w


def _ls_size(v, where: str, ls: LoadStore) -> int:
    try:
        n = units.size_bytes(v)
    except units.UnitError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    if not 1 <= n <= ls.max_size:
        raise ScenarioError(f"{where}: a Load/Store operation moves 1..{ls.max_size} bytes (ls.max_size), got {n}")
    return n


def _ls_op(sec: _Section, count: int, ls: LoadStore) -> dict:
    op = {
        "src": host_index(sec._get("src", None), sec.path("src"), count),
        "dst": host_index(sec._get("dst", None), sec.path("dst"), count),
        "kind": sec.choice("kind", "load", LS_KINDS),
        "time_ps": sec.time("time", 0),
    }
    op["size"] = 8 if op["kind"] in ("fadd", "cas") else (
        0 if op["kind"] == "fence" else _ls_size(sec._get("size", 64), sec.path("size"), ls))
    op["addr"] = sec.int("addr", 0, lo=0)
    sec.done()
    if op["src"] == op["dst"] and op["kind"] != "fence":
        raise ScenarioError(f"{sec.where}: src and dst are the same GPU (h{op['src']})")
    return op


def _transport(sec: _Section) -> tuple[str, str]:
    transport = sec.choice("transport", "raw", TRANSPORTS)
    verb = sec.choice("verb", "raw" if transport == "raw" else "write", VERBS)
    if transport == "uet" and verb != "write":
        raise ScenarioError(f"{sec.path('verb')}: verb {verb!r} does not go with transport \"uet\" "
                            f"(UET messages are SES writes: verb \"write\", or leave verb out)")
    if (transport == "raw") != (verb == "raw"):
        raise ScenarioError(f"{sec.path('verb')}: verb {verb!r} does not go with transport {transport!r} "
                            f"(raw flows have verb \"raw\"; roce verbs: write, send, read, write_imm, send_imm)")
    return transport, verb


def host_index(value, where: str, count: int) -> int:
    """A host given as an index (3) or a name ("h3")."""
    if isinstance(value, str) and value.startswith("h") and value[1:].isdigit():
        idx = int(value[1:])
    elif isinstance(value, int) and not isinstance(value, bool):
        idx = value
    else:
        raise ScenarioError(f"{where}: expected a host such as \"h3\" or 3, got {value!r}")
    if not 0 <= idx < count:
        raise ScenarioError(f"{where}: unknown host {value!r}; this topology has hosts h0..h{count - 1}")
    return idx


def _flow(sec: _Section, count: int) -> FlowSpec:
    f = FlowSpec(
        src=host_index(sec._get("src", None), sec.path("src"), count),
        dst=host_index(sec._get("dst", None), sec.path("dst"), count),
        size=sec.size("size", None) if "size" in sec.data else _missing(sec, "size"),
        start_ps=sec.time("start", 0),
        prio=sec.int("prio", 0, lo=0, hi=7),
        **dict(zip(("transport", "verb"), _transport(sec))),
    )
    sec.done()
    if f.src == f.dst:
        raise ScenarioError(f"{sec.where}: src and dst are the same host (h{f.src})")
    return f


def _missing(sec: _Section, key: str):
    raise ScenarioError(f"{sec.path(key)}: required")


def _workload(sec: _Section, count: int) -> dict:
    kind = sec.choice("kind", None, WORKLOAD_KINDS) if "kind" in sec.data else _missing(sec, "kind")
    w: dict = {"kind": kind}
    w["size"] = sec.size("size", None) if "size" in sec.data else _missing(sec, "size")
    w["start_ps"] = sec.time("start", 0)
    w["prio"] = sec.int("prio", 0, lo=0, hi=7)
    w["transport"], w["verb"] = _transport(sec)
    if kind == "incast":
        w["receiver"] = host_index(sec._get("receiver", 0), sec.path("receiver"), count)
        senders = sec._get("senders", None)
        if senders is None:
            senders = [h for h in range(count) if h != w["receiver"]]
        elif isinstance(senders, int) and not isinstance(senders, bool):
            if not 1 <= senders <= count - 1:
                raise ScenarioError(f"{sec.path('senders')}: must be in 1..{count - 1} (hosts other than the receiver), got {senders}")
            senders = [h for h in range(count) if h != w["receiver"]][:senders]
        elif isinstance(senders, list):
            senders = [host_index(s, f"{sec.path('senders')}[{i}]", count) for i, s in enumerate(senders)]
        else:
            raise ScenarioError(f"{sec.path('senders')}: expected a count or a list of hosts, got {senders!r}")
        if w["receiver"] in senders:
            raise ScenarioError(f"{sec.path('senders')}: the receiver h{w['receiver']} cannot also send to itself")
        if len(set(senders)) != len(senders):
            twice = next(h for i, h in enumerate(senders) if h in senders[:i])
            raise ScenarioError(f"{sec.path('senders')}: h{twice} is listed more than once; list each sender "
                                f"once (for two flows from one host, add a second [[workload]] or a [[flow]])")
        w["senders"] = tuple(senders)
        w["stagger_ps"] = sec.time("stagger", 0)
        if w["start_ps"] + w["stagger_ps"] * max(len(senders) - 1, 0) > MAX_TIME_PS:
            raise ScenarioError(f"{sec.path('stagger')}: the last of {len(senders)} senders would start after "
                                f"the longest simulated time (1e6 s); use a smaller stagger or start")
    elif kind == "permutation":
        w["seed"] = sec.int("seed", 0, lo=0)
    sec.done()
    return w


def _build(data: dict) -> Scenario:
    top = _Section(data, "")
    name = top.str("name", "scenario")
    description = top.str("description", "")
    seed = top.int("seed", 1, lo=0, hi=2**63 - 1)
    topology = _topology(_Section(top._get("topology", None), "topology"))
    switch = _switch(_Section(top._get("switch", None), "switch"), topology.kind)
    host = _host(_Section(top._get("host", None), "host"))
    ports = _ports(_Section(top._get("ports", None), "ports"))
    run = _run(_Section(top._get("run", None), "run"))
    pfc = _pfc(_Section(top._get("pfc", None), "pfc")) if "pfc" in data else Pfc()
    ecn = _ecn(_Section(top._get("ecn", None), "ecn")) if "ecn" in data else Ecn()
    roce = _roce(_Section(top._get("roce", None), "roce"))
    dcqcn = _dcqcn(_Section(top._get("dcqcn", None), "dcqcn")) if "dcqcn" in data else Dcqcn()
    hpcc = _hpcc(_Section(top._get("hpcc", None), "hpcc")) if "hpcc" in data else Hpcc()
    if hpcc.enabled and dcqcn.enabled:
        raise ScenarioError("hpcc.enabled and dcqcn.enabled are both true: a QP runs one congestion control; "
                            "set dcqcn.enabled = false (or hpcc.enabled = false)")
    if hpcc.enabled and roce.ack_every != 1:
        raise ScenarioError(f"roce.ack_every: HPCC needs an ACK (with its INT records) for every packet; "
                            f"set roce.ack_every = 1 (got {roce.ack_every}) or hpcc.enabled = false")
    ls = _ls(_Section(top._get("ls", None), "ls"))
    cbfc = _cbfc(_Section(top._get("cbfc", None), "cbfc")) if "cbfc" in data else Cbfc()
    link = _link(_Section(top._get("link", None), "link"))
    uet = _uet(_Section(top._get("uet", None), "uet"))
    count = n_hosts(topology)
    flows_raw = top._get("flow", [])
    wl_raw = top._get("workload", [])
    for key, val in (("flow", flows_raw), ("workload", wl_raw)):
        if not isinstance(val, list):
            raise ScenarioError(f"{key}: expected an array of tables ([[{key}]]), got {type(val).__name__}")
    flows = tuple(_flow(_Section(f, f"flow[{i}]"), count) for i, f in enumerate(flows_raw))
    workloads = tuple(_workload(_Section(w, f"workload[{i}]"), count) for i, w in enumerate(wl_raw))
    streams_raw, ops_raw = top._get("loadstore", []), top._get("ls_op", [])
    for key, val in (("loadstore", streams_raw), ("ls_op", ops_raw)):
        if not isinstance(val, list):
            raise ScenarioError(f"{key}: expected an array of tables ([[{key}]]), got {type(val).__name__}")
    streams = tuple(_ls_stream(_Section(w, f"loadstore[{i}]"), count, ls) for i, w in enumerate(streams_raw))
    ls_ops = tuple(_ls_op(_Section(o, f"ls_op[{i}]"), count, ls) for i, o in enumerate(ops_raw))
    top.done()
    if not flows and not workloads and not streams and not ls_ops:
        raise ScenarioError("the scenario has no traffic: add a [[workload]], [[flow]], [[loadstore]] or [[ls_op]] table")
    if cbfc.enabled and pfc.enabled and set(cbfc.priorities) & set(pfc.priorities):
        raise ScenarioError(f"cbfc.priorities and pfc.priorities overlap ({sorted(set(cbfc.priorities) & set(pfc.priorities))}); "
                            f"a traffic class uses PFC or CBFC, not both")
    if host.mtu + 22 > MAX_MTU + 216:
        raise ScenarioError(f"host.mtu: {host.mtu} B frames exceed the largest frame the switch takes")
    uses = _transports(flows, workloads)
    if "roce" in uses and host.mtu not in ROCE_MTUS:
        raise ScenarioError(f"host.mtu: RoCE needs an IB path MTU ({', '.join(map(str, ROCE_MTUS))}), got {host.mtu}")
    if "uet" in uses and host.mtu + UET_DATA_HEADER_BYTES - 22 > MAX_MTU + 216 - 22:
        raise ScenarioError(f"host.mtu: {host.mtu} B of UET payload plus its {UET_DATA_HEADER_BYTES} B of headers "
                            f"exceed the largest frame the switch takes; use host.mtu <= {MAX_MTU + 216 - UET_DATA_HEADER_BYTES}")
    if uet.trim and pfc.enabled and uet.trim_prio in pfc.priorities:
        raise ScenarioError(f"uet.trim_prio: {uet.trim_prio} is a PFC (lossless) priority; trimmed frames travel "
                            f"on a lossy class: pick a priority not in pfc.priorities {list(pfc.priorities)}")
    if switch.buffer_bytes < 2 * (host.mtu + 64):
        raise ScenarioError(f"switch.buffer: {switch.buffer_bytes} B cannot hold two frames of host.mtu {host.mtu} B")
    sc = Scenario(name=name, description=description, seed=seed, topology=topology,
                  switch=switch, host=host, ports=ports, run=run, pfc=pfc, ecn=ecn,
                  roce=roce, dcqcn=dcqcn, hpcc=hpcc, ls=ls, cbfc=cbfc, link=link, uet=uet, loadstore=streams,
                  ls_ops=ls_ops, flows=flows,
                  workloads=workloads, source=copy.deepcopy(data))
    if cbfc.enabled:
        _check_cbfc(cbfc, host, max_frame_bytes(sc))
    if pfc.enabled:
        _check_pfc(pfc, host, max_frame_bytes(sc))
    _check_timers(sc)
    from . import budget                    # imports this module: not at the top
    budget.check(sc)
    return sc
