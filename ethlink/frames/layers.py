"""scapy layers for every frame ethlink emits, and the bindings that decode them.

scapy ships BTH, AETH and the CNP padding (`scapy.contrib.roce`) and the PFC frame
(`scapy.contrib.mac_control.MACControlClassBasedFlowControl`); they are reused as they
are. The layers scapy lacks (RETH, ImmDt, AtomicETH, AtomicAckETH and ethlink's own
ELBase, ELTxn, ELCredit) are generated from the field tables in `fields.py`. Dispatch is
data: which extension headers follow a BTH comes from `fields.ROCE_OPCODES`, so
`Ether(raw)` decodes every frame `build.py` makes down to its payload.

Limits: importing this module binds layers in scapy's global registry (as loading a scapy
contrib does); RoCE is decoded for IPv4/UDP 4791 and RC opcodes only. EthLink frames
carry no length field: the data after the transaction headers is sized from their
opcodes and lengths, and anything after it is Ethernet padding.
"""
from __future__ import annotations

from typing import Any

from scapy.config import conf
from scapy.contrib.mac_control import MACControlClassBasedFlowControl
from scapy.contrib.roce import AETH, BTH, CNPPadding
from scapy.fields import (
    BitEnumField,
    PacketListField,
    BitField,
    ByteEnumField,
    ByteField,
    Field,
    FlagsField,
    IntField,
    LongField,
    ShortEnumField,
    ShortField,
    XBitField,
    XByteField,
    XIntField,
    XLongField,
    XShortField,
)
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, bind_bottom_up, bind_layers

from . import fields as F

__all__ = [
    "AETH", "BTH", "CNPPadding", "MACControlClassBasedFlowControl",
    "RETH", "ImmDt", "AtomicETH", "AtomicAckETH", "ELBase", "ELTxn", "ELCredit", "HpccInt", "HpccIntHop",
    "PDSRudReq", "SESStd", "PDSAckCC", "PDSNack", "LAYERS", "scapy_fields",
]

_PLAIN = {8: (ByteField, XByteField), 16: (ShortField, XShortField),
          32: (IntField, XIntField), 64: (LongField, XLongField)}


def scapy_fields(fmt: F.HeaderFormat) -> list[Field[Any, Any]]:
    """scapy fields_desc for a field table: enums and flags named, whole bytes as
    Byte/Short/Int/Long fields, the rest as bit fields; derived fields default to None."""
    out: list[Field[Any, Any]] = []
    for f in fmt.fields:
        default = None if f.derived else f.default
        if f.flags is not None:
            names = [m.name for m in sorted(f.flags, key=int)]
            names += [f"b{i}" for i in range(len(names), f.bits)]
            out.append(FlagsField(f.name, f.default, f.bits, names))
        elif f.enum is not None:
            table = {int(m): m.name for m in f.enum}
            if f.bits == 8:
                out.append(ByteEnumField(f.name, f.default, table))
            elif f.bits == 16:
                out.append(ShortEnumField(f.name, f.default, table))
            else:
                out.append(BitEnumField(f.name, f.default, f.bits, table))
        elif f.bits in _PLAIN:
            out.append(_PLAIN[f.bits][f.hex](f.name, default))
        else:
            out.append((XBitField if f.hex else BitField)(f.name, default, f.bits))
    return out


def _bth_of(layer: Packet) -> Packet | None:
    under = layer.underlayer
    while under is not None and not isinstance(under, BTH):
        under = under.underlayer
    return under


def _int_follows(layer: Packet) -> bool:
    """An HPCC INT header follows the RoCE headers: the IPv4 DSCP has fields.INT_DSCP_BIT."""
    under = layer.underlayer
    while under is not None and not isinstance(under, IP):
        under = under.underlayer
    return under is not None and bool((under.tos >> 2) & F.INT_DSCP_BIT)


def _roce_next_header(self: Packet, payload: bytes) -> type[Packet]:
    """The header after `self` for the opcode of the BTH below it (fields.ROCE_OPCODES),
    then the HPCC INT header when the DSCP flags one."""
    bth = _bth_of(self)
    if bth is None:
        return Packet.guess_payload_class(self, payload)
    fmt = F.ROCE_OPCODES.get(bth.opcode)  # type: ignore[call-overload]
    if fmt is None:
        return conf.raw_layer
    chain = [LAYERS[h.name] for h in fmt.headers]
    i = chain.index(type(self)) if type(self) in chain else len(chain)
    if i + 1 < len(chain):
        return chain[i + 1]
    return HpccInt if _int_follows(self) else conf.raw_layer


class _RoceExtHeader(Packet):
    """An IBA extension transport header: what follows it depends on the BTH opcode."""

    guess_payload_class = _roce_next_header


class RETH(_RoceExtHeader):
    name = "RETH"
    fields_desc = scapy_fields(F.RETH)


class ImmDt(_RoceExtHeader):
    name = "ImmDt"
    fields_desc = scapy_fields(F.IMMDT)


class AtomicETH(_RoceExtHeader):
    name = "AtomicETH"
    fields_desc = scapy_fields(F.ATOMIC_ETH)


class AtomicAckETH(_RoceExtHeader):
    name = "AtomicAckETH"
    fields_desc = scapy_fields(F.ATOMIC_ACK_ETH)


# NOTE: scapy's AETH is followed by payload (READ_RESPONSE_*) or by an AtomicAckETH
# (ATOMIC_ACK), and has no field of its own to tell which; only the BTH opcode does. Giving
# it the same opcode-driven dispatch as our extension headers extends scapy's layer rather
# than shadowing it with a second AETH class.
AETH.guess_payload_class = _roce_next_header  # type: ignore[method-assign]


class ELBase(Packet):
    """EthLink v1 base header; `ntx` is filled with the number of ELTxn layers at build."""

    name = "ELBase"
    fields_desc = scapy_fields(F.EL_BASE)

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.ntx is None:
            n, layer = 0, self.payload
            while isinstance(layer, ELTxn):
                n, layer = n + 1, layer.payload
            pkt = bytes([(pkt[0] & 0xF0) | (n & 0x0F)]) + pkt[1:]
        return pkt + pay

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        if self.flags & F.ElFlags.CTRL:
            return ELCredit
        return ELTxn if self.ntx else conf.raw_layer

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes | None]:
        if self.flags & F.ElFlags.CTRL or self.ntx:
            return s, None
        return b"", s


class ELTxn(Packet):
    """EthLink v1 transaction header; the data of all transactions follows the last one."""

    name = "ELTxn"
    fields_desc = scapy_fields(F.EL_TXN)

    def _siblings(self) -> tuple[list[ELTxn], ELBase | None]:
        txns: list[ELTxn] = [self]
        under = self.underlayer
        while isinstance(under, ELTxn):
            txns.insert(0, under)
            under = under.underlayer
        return txns, under if isinstance(under, ELBase) else None

    def _is_last(self) -> bool:
        txns, base = self._siblings()
        return base is None or len(txns) >= (base.ntx or 0)

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return conf.raw_layer if self._is_last() else ELTxn

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes | None]:
        if not self._is_last():
            return s, None
        txns, _ = self._siblings()
        n = sum(F.el_data_len(t.opcode, t.length) for t in txns)
        return s[:n], s[n:]


class ELCredit(Packet):
    """ethlink CBFC credit update."""

    name = "ELCredit"
    fields_desc = scapy_fields(F.EL_CREDIT)

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes | None]:
        return b"", s


class HpccIntHop(Packet):
    """One HPCC INT record (a switch egress)."""

    name = "HpccIntHop"
    fields_desc = scapy_fields(F.HPCC_INT_HOP)

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes | None]:
        return b"", s


class HpccInt(Packet):
    """HPCC INT header and its records, after the RoCE headers (fields.HPCC_INT); the
    payload follows."""

    name = "HpccInt"
    fields_desc = [*scapy_fields(F.HPCC_INT),
                   PacketListField("hops", [], HpccIntHop, count_from=lambda p: p.nhop)]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return conf.raw_layer


_bth_guess = BTH.guess_payload_class


def _bth_payload(self: Packet, payload: bytes) -> type[Packet]:
    # A BTH whose opcode has no extension header: the INT header may follow it directly.
    cls = _bth_guess(self, payload)
    if cls is conf.raw_layer and self.opcode in F.ROCE_OPCODES and _int_follows(self):
        return HpccInt
    return cls


BTH.guess_payload_class = _bth_payload  # type: ignore[method-assign]


class PDSRudReq(Packet):
    """PDS RUD request; also the layer UDP port 4793 is bound to: decoding dispatches on
    the prologue's 5-bit type to the PDS header it names."""

    name = "PDSRudReq"
    fields_desc = scapy_fields(F.PDS_RUD_REQ)

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        # NOTE: scapy calls dispatch_hook only when the class itself defines it.
        if _pkt:
            return _PDS_BY_TYPE.get(_pkt[0] >> 3, conf.raw_layer)
        return cls

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return SESStd if self.next_hdr == F.UetNextHeader.REQUEST_STD else conf.raw_layer


class SESStd(Packet):
    name = "SESStd"
    fields_desc = scapy_fields(F.SES_STD)


class PDSAckCC(Packet):
    name = "PDSAckCC"
    fields_desc = scapy_fields(F.PDS_ACK_CC)


class PDSNack(Packet):
    name = "PDSNack"
    fields_desc = scapy_fields(F.PDS_NACK)


_PDS_BY_TYPE: dict[int, type[Packet]] = {
    int(F.UetPdsType.RUD_REQ): PDSRudReq, int(F.UetPdsType.ACK_CC): PDSAckCC, int(F.UetPdsType.NACK): PDSNack,
}

# Layer class of each field table, by table name.
LAYERS: dict[str, type[Packet]] = {
    F.BTH.name: BTH, F.RETH.name: RETH, F.AETH.name: AETH, F.IMMDT.name: ImmDt,
    F.ATOMIC_ETH.name: AtomicETH, F.ATOMIC_ACK_ETH.name: AtomicAckETH,
    F.CNP_PADDING.name: CNPPadding, F.PFC.name: MACControlClassBasedFlowControl,
    F.EL_BASE.name: ELBase, F.EL_TXN.name: ELTxn, F.EL_CREDIT.name: ELCredit,
    F.HPCC_INT.name: HpccInt, F.HPCC_INT_HOP.name: HpccIntHop,
    F.PDS_RUD_REQ.name: PDSRudReq, F.SES_STD.name: SESStd, F.PDS_ACK_CC.name: PDSAckCC,
    F.PDS_NACK.name: PDSNack,
}

# BTH -> first extension header, by opcode. Bottom-up only: building always sets the
# opcode explicitly, and scapy's own BTH()/AETH() build default stays untouched.
for _op, _fmt in F.ROCE_OPCODES.items():
    if _fmt.headers:
        _first = LAYERS[_fmt.headers[0].name]
        if ({"opcode": int(_op)}, _first) not in BTH.payload_guess:
            bind_bottom_up(BTH, _first, opcode=int(_op))

bind_layers(UDP, PDSRudReq, dport=F.UET_UDP_PORT)
bind_layers(Dot1Q, ELBase, type=int(F.EtherType.LOCAL_EXP1))
bind_layers(Ether, ELBase, type=int(F.EtherType.LOCAL_EXP1))
del _op, _fmt, _first
