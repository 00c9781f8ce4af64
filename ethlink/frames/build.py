"""Wire bytes of one traced frame: a trace row (a mapping of named fields) in, bytes out.

Each `frame_kind` has a builder that stacks scapy layers filled from the field tables in
`fields.py`; derived fields (IP total length and checksum, UDP length and checksum, the
RoCE ICRC, EthLink `ntx`) are left to the layers, which fill them at build. scapy's BTH
computes the ICRC as IBA Annex A17 says (CRC32 over 8 B of 0xFF and IP/UDP/BTH/... with
TOS, TTL, IP checksum, UDP checksum and the BTH FECN/BECN/reserved byte set to ones).
Frames shorter than 60 B are zero-padded as Ethernet does, and the result is checked
against the row's `frame_bytes` (FCS included): the trace's lengths are cross-checked.

Data is not simulated, so payload bytes are synthesised: RoCE payload byte i is
(psn + i) mod 256, followed by `pad_cnt` zero pad bytes; EthLink STORE/LOAD_RESP data byte
i is (addr + i) mod 256 (memory holds the low byte of its own address); atomic operands
come from the row (0 if absent); raw frames carry zeros.

Limits: builds through scapy, 0.1-1 ms per frame (RoCE frames cost most: scapy's ICRC
rebuilds the packet): meant for pcaps and checks of trace excerpts, not every frame of a
long run. IP identification is 0 with DF set
(as RoCE NICs send it); the 802.1Q tag is priority-only (VLAN 0, DEI 0).
"""
from __future__ import annotations

import ipaddress
import math
import zlib
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

from scapy.contrib.mac_control import MACControlClassBasedFlowControl
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from . import fields as F
from .layers import LAYERS, ELTxn

__all__ = ["Row", "build_frame", "to_scapy", "decode", "fcs"]

_MISSING = object()


class Row:
    """Read-only view of a trace row: None and NaN mean absent, absent means the default
    of `fields.COLUMNS` (or the `default` given)."""

    __slots__ = ("_m",)

    def __init__(self, mapping: Mapping[str, Any]) -> None:
        self._m = mapping

    def has(self, key: str) -> bool:
        v = self._m.get(key)
        return not (v is None or (isinstance(v, float) and math.isnan(v)))

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if self.has(key):
            return self._m[key]
        if default is _MISSING:
            default = F.COLUMNS[key].default if key in F.COLUMNS else None
        if default is F.REQUIRED:
            raise ValueError(f"the row has no {key}")
        return default

    def uint(self, key: str, default: Any = _MISSING) -> int:
        """The value of `key` as an int that fits its column's width."""
        return F.COLUMNS[key].spec(key).check(self.get(key, default), "row")

    def over(self, **overrides: Any) -> Row:
        """This row with some columns replaced."""
        return Row(ChainMap(overrides, self._m))


def _mac(v: int) -> str:
    return ":".join(f"{b:02x}" for b in v.to_bytes(6, "big"))


def _ip(v: int) -> str:
    return str(ipaddress.IPv4Address(v))


_BYTE_CYCLE = bytes(range(256))


def _pattern(start: int, n: int) -> bytes:
    """n bytes counting up from start mod 256, wrapping."""
    s = start & 0xFF
    return (_BYTE_CYCLE * ((s + n) // 256 + 1))[s:s + n]


def _stack(*layers: Packet) -> Packet:
    """Chain layers in place (`/` would copy the whole chain at every step)."""
    top = layers[0]
    for layer in layers[1:]:
        top.add_payload(layer)
    return top


def _layer(fmt: F.HeaderFormat, source: Row, **fixed: int) -> Packet:
    values = fmt.values(source)
    values.update(fixed)
    return LAYERS[fmt.name](**values)


def _tagged(r: Row, ethertype: F.EtherType) -> list[Packet]:
    return [Ether(dst=_mac(r.uint("dst_mac")), src=_mac(r.uint("src_mac")), type=F.EtherType.VLAN),
            Dot1Q(prio=r.uint("pcp"), dei=0, vlan=0, type=int(ethertype))]


def _raw(r: Row) -> Packet:
    fb = r.uint("frame_bytes", F.REQUIRED)
    n = fb - F.FCS_BYTES - F.ETHER_BYTES - F.DOT1Q_BYTES
    return _stack(*_tagged(r, F.EtherType.LOCAL_EXP2), Raw(bytes(n)))


def _roce(r: Row) -> Packet:
    bth = _layer(F.BTH, r)
    try:
        op = F.RoceOpcode(bth.opcode)
    except ValueError:
        raise ValueError(f"opcode={bth.opcode:#x} is not an RC opcode ethlink builds") from None
    fmt = F.ROCE_OPCODES[op]
    payload_len = r.uint("payload_len")
    if payload_len and not fmt.payload:
        raise ValueError(f"payload_len={payload_len} but {op.name} carries no payload")
    data = _pattern(bth.psn, payload_len) + bytes(bth.padcount)
    dscp = r.uint("dscp")
    hops = r.get("int_hops")
    if hops is not None:
        dscp |= F.INT_DSCP_BIT              # an HPCC INT header follows the RoCE headers
    tos = (dscp << 2) | r.uint("ecn")
    layers = [*_tagged(r, F.EtherType.IPV4),
              IP(tos=tos, id=0, flags="DF", ttl=r.uint("ttl"), src=_ip(r.uint("ip_src")),
                 dst=_ip(r.uint("ip_dst"))),
              UDP(sport=r.uint("udp_sport"), dport=F.ROCEV2_UDP_PORT),
              bth,
              *(_layer(h, r) for h in fmt.headers)]
    if hops is not None:
        layers.append(_hpcc_int(list(hops)))
    if data:
        layers.append(Raw(data))
    return _stack(*layers)


def _hpcc_int(hops: list[Mapping[str, Any]]) -> Packet:
    if len(hops) > 255:
        raise ValueError(f"int_hops: {len(hops)} records do not fit the 8-bit HpccInt.nhop")
    recs = [LAYERS[F.HPCC_INT_HOP.name](**F.HPCC_INT_HOP.values(Row(h), "HpccIntHop")) for h in hops]
    return LAYERS[F.HPCC_INT.name](nhop=len(recs), hops=recs)


def _uet_ip_udp(r: Row) -> list[Packet]:
    tos = (r.uint("dscp") << 2) | r.uint("ecn")
    return [*_tagged(r, F.EtherType.IPV4),
            IP(tos=tos, id=0, flags="DF", ttl=r.uint("ttl"), src=_ip(r.uint("ip_src")), dst=_ip(r.uint("ip_dst"))),
            UDP(sport=r.uint("udp_sport"), dport=F.UET_UDP_PORT)]


def _uet(r: Row) -> Packet:
    # A UET data frame: PDS RUD request + SES standard request + payload byte i =
    # (psn + i) mod 256. A trimmed frame (`frame_bytes` below the full headers) is the
    # same frame cut to frame_bytes, as the switch cut it.
    pds = _layer(F.PDS_RUD_REQ, r)
    n = r.uint("payload_len")
    layers = [*_uet_ip_udp(r), pds, _layer(F.SES_STD, r)]
    if n:
        layers.append(Raw(_pattern(pds.psn, n)))
    pkt = _stack(*layers)
    if r.has("frame_bytes") and r.uint("frame_bytes") < F.uet_frame_bytes("uet", n):
        keep = r.uint("frame_bytes") - F.FCS_BYTES
        ip_len = keep - F.ETHER_BYTES - F.DOT1Q_BYTES
        # the IP and UDP lengths (and checksums) describe the trimmed datagram
        pkt[IP].len = ip_len
        pkt[UDP].len = ip_len - F.IPV4_BYTES
        pkt[UDP].chksum = 0             # IPv4 UDP "no checksum": the switch does not recompute one
        return Raw(bytes(pkt)[:keep])
    return pkt


def _uet_ctrl(r: Row) -> Packet:
    t = r.uint("pds_type")
    if t == F.UetPdsType.ACK_CC:
        return _stack(*_uet_ip_udp(r), _layer(F.PDS_ACK_CC, r))
    if t == F.UetPdsType.NACK:
        return _stack(*_uet_ip_udp(r), _layer(F.PDS_NACK, r))
    raise ValueError(f"pds_type={t} is not a PDS control type ethlink builds (ACK_CC 8, NACK 10)")


def _cnp(r: Row) -> Packet:
    # IBA Annex A17 CNP: opcode 0x81 with BECN set; the kind fixes both.
    return _roce(r.over(opcode=int(F.RoceOpcode.CNP), becn=1))


def _pfc(r: Row) -> Packet:
    vector = r.uint("pfc_vector")
    times = [int(t) for t in r.get("pfc_times")]
    if len(times) != F.PFC_CLASSES:
        raise ValueError(f"pfc_times has {len(times)} entries, PFC has {F.PFC_CLASSES} classes")
    values = {}
    for i, t in enumerate(times):
        values[f"c{i}_enabled"] = (vector >> i) & 1
        values[f"c{i}_pause_time"] = F.PFC[f"c{i}_pause_time"].check(t, "PFC")
    return _stack(Ether(dst=_mac(F.PFC_DST_MAC), src=_mac(r.uint("src_mac")), type=F.EtherType.MAC_CONTROL),
                  MACControlClassBasedFlowControl(**values))


def _txns(r: Row) -> list[Row]:
    if r.has("el_txns"):
        return [Row(t) for t in r.get("el_txns")]
    if not r.has("el_opcode"):
        return []
    flat = {key: r.get(col) for col, key in F.EL_TXN_COLUMNS.items()}
    flat.update(swap_add=r.get("atomic_swap_add"), compare=r.get("atomic_compare"), orig=r.get("atomic_orig"))
    return [Row(flat)]


def _txn_data(t: Row, opcode: F.ElOpcode, length: int, addr: int) -> bytes:
    def u64(key: str) -> bytes:
        return F.FieldSpec(key, 64, column=key).check(t.get(key, 0), "ELTxn data").to_bytes(8, "big")

    if opcode in (F.ElOpcode.STORE, F.ElOpcode.LOAD_RESP):
        return _pattern(addr, length)
    if opcode == F.ElOpcode.ATOMIC_FADD:
        return u64("swap_add")
    if opcode == F.ElOpcode.ATOMIC_CAS:
        return u64("swap_add") + u64("compare")
    if opcode == F.ElOpcode.ATOMIC_RESP:
        return u64("orig")
    return b""


_ADDRESSING = (F.ElOpcode.LOAD_REQ, F.ElOpcode.LOAD_RESP, F.ElOpcode.STORE)


def _el_base(r: Row, ntx: int, flags: int) -> Packet:
    if r.has("el_ver") and r.uint("el_ver") != F.EL_VERSION:
        raise ValueError(f"el_ver={r.get('el_ver')}: ethlink.frames builds EthLink v{F.EL_VERSION}")
    if r.has("el_ntx") and r.uint("el_ntx") != ntx:
        raise ValueError(f"el_ntx={r.get('el_ntx')} but the row carries {ntx} transactions")
    return _layer(F.EL_BASE, r.over(el_tc=r.get("el_tc", r.get("pcp")), el_ecn=r.get("el_ecn", r.get("ecn"))),
                  ntx=F.EL_BASE["ntx"].check(ntx, "ELBase"), flags=flags)


def _ethlink(r: Row) -> Packet:
    flags = r.uint("el_flags")
    if flags & F.ElFlags.CTRL:
        raise ValueError("el_flags has CTRL set: control frames are frame_kind 'cbfc'")
    txns = _txns(r)
    layers = [*_tagged(r, F.EtherType.LOCAL_EXP1), _el_base(r, len(txns), flags)]
    data = []
    for i, t in enumerate(txns):
        hdr = F.EL_TXN.values(t, f"el_txns[{i}]")
        try:
            op = F.ElOpcode(hdr["opcode"])
        except ValueError:
            raise ValueError(f"el_txns[{i}].opcode={hdr['opcode']:#x} is not an EthLink v1 opcode") from None
        if op in _ADDRESSING and not 1 <= hdr["length"] <= F.EL_MAX_TXN_LENGTH:
            raise ValueError(f"el_txns[{i}].length={hdr['length']} is outside 1..{F.EL_MAX_TXN_LENGTH}")
        layers.append(ELTxn(**hdr))
        data.append(_txn_data(t, op, hdr["length"], hdr["addr"]))
    blob = b"".join(data)
    if blob:
        layers.append(Raw(blob))
    return _stack(*layers)


def _cbfc(r: Row) -> Packet:
    flags = r.uint("el_flags") | F.ElFlags.CTRL
    return _stack(*_tagged(r, F.EtherType.LOCAL_EXP1), _el_base(r, 0, flags), _layer(F.EL_CREDIT, r))


_BUILDERS: dict[F.FrameKind, Callable[[Row], Packet]] = {
    F.FrameKind.RAW: _raw,
    F.FrameKind.ROCE: _roce,
    F.FrameKind.CNP: _cnp,
    F.FrameKind.PFC: _pfc,
    F.FrameKind.ETHLINK: _ethlink,
    F.FrameKind.CBFC: _cbfc,
    F.FrameKind.UET: _uet,
    F.FrameKind.UET_CTRL: _uet_ctrl,
}


def fcs(frame: bytes) -> bytes:
    """Ethernet FCS of a frame (IEEE 802.3 clause 3.2.9): CRC32, least significant byte first."""
    return zlib.crc32(frame).to_bytes(4, "little")


def build_frame(row: Mapping[str, Any], *, with_fcs: bool = False) -> bytes:
    """Exact wire bytes of one traced frame, without the FCS unless `with_fcs`.

    Raises ValueError if a field does not fit its width, the kind or an opcode is unknown,
    or the built length differs from the row's `frame_bytes`.
    """
    r = Row(row)
    kind_name = r.get("frame_kind")
    try:
        kind = F.FrameKind(kind_name)
    except ValueError:
        raise ValueError(f"frame_kind={kind_name!r} is not one of {[k.value for k in F.FrameKind]}") from None
    want = r.uint("frame_bytes") if r.has("frame_bytes") else None
    if want is not None and want < F.ETH_MIN_FRAME:
        raise ValueError(f"frame_bytes={want} is below the {F.ETH_MIN_FRAME} B Ethernet minimum")
    raw = bytes(_BUILDERS[kind](r))
    short = F.ETH_MIN_FRAME - F.FCS_BYTES - len(raw)
    if short > 0:
        raw += bytes(short)
    if want is not None and want != len(raw) + F.FCS_BYTES:
        raise ValueError(f"frame_bytes={want} but the {kind.value} frame built from the row is "
                         f"{len(raw) + F.FCS_BYTES} B (FCS included)")
    return raw + fcs(raw) if with_fcs else raw


def decode(raw: bytes) -> Packet:
    """scapy decode of a frame (no FCS) with ethlink's layers bound."""
    return Ether(raw)


def to_scapy(row: Mapping[str, Any]) -> Packet:
    """scapy packet of a traced frame, decoded from its wire bytes."""
    return decode(build_frame(row))
