"""Field tables: every header ethlink puts on the wire, declared once.

A header is a `HeaderFormat`, an ordered table of `FieldSpec` (name, width in bits,
default, the trace column that feeds it). The scapy layers in `layers.py` are generated
from these tables (or, for headers scapy already ships, checked against them by the
tests), the builder in `build.py` fills them from a trace row, and the engine can size
its frames from `HeaderFormat.size`, `roce_frame_bytes` and `ethlink_frame_bytes`.

Limits: RoCEv2 is IPv4 only and RC transport only (plus the CNP); no GRH/IPv6, UD/DETH or
SEND-with-invalidate. The EthLink and CBFC formats are ethlink's own (version 1): the real
EthLink and UEC CBFC bytes are not public (PROTOCOLS.md), so only their semantics follow
the sources.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, IntFlag, StrEnum
from typing import Any


class FrameKind(StrEnum):
    """Value of the trace's `frame_kind` column."""

    RAW = "raw"
    ROCE = "roce"
    CNP = "cnp"
    PFC = "pfc"
    ETHLINK = "ethlink"
    CBFC = "cbfc"
    UET = "uet"
    UET_CTRL = "uet_ctrl"      # PDS ACK_CC or NACK, by the row's pds_type


class EtherType(IntEnum):
    """EtherTypes ethlink emits (IEEE Std 802-2014 clause 9.2.4 for the local experimental pair)."""

    IPV4 = 0x0800
    VLAN = 0x8100          # IEEE 802.1Q C-tag TPID
    MAC_CONTROL = 0x8808   # IEEE 802.3 clause 31
    LOCAL_EXP1 = 0x88B5    # IEEE 802 local experimental EtherType 1: EthLink and CBFC
    LOCAL_EXP2 = 0x88B6    # IEEE 802 local experimental EtherType 2: raw test frames


class Ecn(IntEnum):
    """ECN codepoint in the low 2 bits of the IPv4 TOS byte (RFC 3168 section 5)."""

    NOT_ECT = 0b00
    ECT1 = 0b01
    ECT0 = 0b10
    CE = 0b11


class RoceOpcode(IntEnum):
    """BTH opcodes of the RC transport (Linux include/rdma/ib_pack.h IB_OPCODE_RC_*) and
    the RoCEv2 CNP (IBA Annex A17, congestion notification packet)."""

    SEND_FIRST = 0x00
    SEND_MIDDLE = 0x01
    SEND_LAST = 0x02
    SEND_LAST_IMM = 0x03
    SEND_ONLY = 0x04
    SEND_ONLY_IMM = 0x05
    WRITE_FIRST = 0x06
    WRITE_MIDDLE = 0x07
    WRITE_LAST = 0x08
    WRITE_LAST_IMM = 0x09
    WRITE_ONLY = 0x0A
    WRITE_ONLY_IMM = 0x0B
    READ_REQUEST = 0x0C
    READ_RESPONSE_FIRST = 0x0D
    READ_RESPONSE_MIDDLE = 0x0E
    READ_RESPONSE_LAST = 0x0F
    READ_RESPONSE_ONLY = 0x10
    ACK = 0x11
    ATOMIC_ACK = 0x12
    CMP_SWAP = 0x13
    FETCH_ADD = 0x14
    CNP = 0x81


class AethSyndrome(IntEnum):
    """AETH syndromes (Linux drivers/infiniband/sw/rxe/rxe_hdr.h, enum aeth_syndrome).

    The top 3 bits are the type (ACK, RNR NAK, NAK); an ACK's low 5 bits are the credit
    count (0x1F: unlimited), a NAK's low 5 bits its code.
    """

    ACK = 0x00
    ACK_UNLIMITED = 0x1F
    RNR_NAK = 0x20
    NAK_PSN_SEQ_ERROR = 0x60
    NAK_INVALID_REQUEST = 0x61
    NAK_REMOTE_ACCESS_ERROR = 0x62
    NAK_REMOTE_OPERATIONAL_ERROR = 0x63


AETH_TYPE_MASK = 0xE0  # rxe_hdr.h AETH_TYPE_MASK


class ElOpcode(IntEnum):
    """EthLink v1 transaction opcodes (ethlink's own format)."""

    LOAD_REQ = 0x01
    LOAD_RESP = 0x02
    STORE = 0x03
    STORE_ACK = 0x04
    ATOMIC_FADD = 0x05
    ATOMIC_CAS = 0x06
    ATOMIC_RESP = 0x07
    FENCE = 0x08
    FENCE_ACK = 0x09


class ElFlags(IntFlag):
    """ELBase flags (3 bits; bit 2 reserved)."""

    CTRL = 0x1            # a control frame (CBFC credit update): no transaction headers
    ACK_REQUESTED = 0x2


class ElTxnFlags(IntFlag):
    """ELTxn flags (8 bits; bits 1-7 reserved)."""

    WANT_COMPLETION = 0x1


EL_VERSION = 1
EL_MAX_TXN_LENGTH = 4096   # bytes one LOAD/STORE transaction may address
ROCEV2_UDP_PORT = 4791     # IANA; IBA Annex A17
ROCEV2_DEFAULT_SPORT = 0xC000  # Linux rxe.h RXE_ROCE_V2_SPORT (base of the entropy range)
ICRC_BYTES = 4             # IBA Vol. 1 section 7.8.1 invariant CRC
FCS_BYTES = 4              # IEEE 802.3 clause 3.2.9
ETH_MIN_FRAME = 64         # IEEE 802.3 clause 4.4.2 minFrameSize, FCS included
ETHER_BYTES = 14
DOT1Q_BYTES = 4
IPV4_BYTES = 20
UDP_BYTES = 8
PFC_DST_MAC = 0x0180C2000001   # IEEE 802.3 Annex 31B/31D MAC Control multicast address
PFC_OPCODE = 0x0101            # IEEE 802.3 Annex 31D, PFC (IEEE 802.1Qbb clause 36)
PFC_CLASSES = 8


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One header field: `name` as in the scapy layer, `bits` wide, big-endian, MSB first.

    `column` is the trace column (or EthLink transaction key) that feeds it; None means a
    constant (reserved bits). `derived` fields are computed at build when left unset (the
    scapy layer's default is None, like IP's len). `enum`/`flags` name its values.
    """

    name: str
    bits: int
    default: int = 0
    column: str | None = None
    enum: type[IntEnum] | None = None
    flags: type[IntFlag] | None = None
    hex: bool = False
    derived: bool = False
    doc: str = ""

    def check(self, value: int | str, where: str) -> int:
        """Return `value` as an int, or raise ValueError if it does not fit this field.

        An enum field also takes its members' names ("WRITE_FIRST"), as a dictionary-encoded
        trace column gives them."""
        src = self.column or self.name
        if isinstance(value, str):
            names = self.enum or self.flags
            if names is None or value not in names.__members__:
                raise ValueError(f"{src}={value!r} is not a {names.__name__ if names else 'number'} name")
            value = names[value]
        v = int(value)
        if not 0 <= v < (1 << self.bits):
            raise ValueError(f"{src}={v} does not fit the {self.bits}-bit field {where}.{self.name}")
        return v


@dataclass(frozen=True, slots=True)
class HeaderFormat:
    """An ordered field table; its widths add up to whole bytes."""

    name: str
    fields: tuple[FieldSpec, ...]
    doc: str = ""
    _by_name: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bits % 8:
            raise ValueError(f"{self.name}: fields add up to {self.bits} bits, not whole bytes")
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})

    @property
    def bits(self) -> int:
        return sum(f.bits for f in self.fields)

    @property
    def size(self) -> int:
        """Header length in bytes."""
        return self.bits // 8

    def __getitem__(self, name: str) -> FieldSpec:
        return self._by_name[name]

    def layout(self) -> list[tuple[str, int, int]]:
        """(name, bit offset from the header start, width) for each field, in wire order."""
        out, off = [], 0
        for f in self.fields:
            out.append((f.name, off, f.bits))
            off += f.bits
        return out

    def values(self, source: Any, where: str | None = None) -> dict[str, int]:
        """Field values read by column from `source` (anything with get(column, default),
        such as `build.Row`), defaults for absent columns, each checked against its width."""
        get = source.get
        return {
            f.name: f.check(f.default if f.column is None else get(f.column, f.default), where or self.name)
            for f in self.fields
        }


def _f(name: str, bits: int, default: int = 0, column: str | None = None, **kw: Any) -> FieldSpec:
    return FieldSpec(name, bits, default, column, **kw)


# --- RoCEv2 (IBA Vol. 1 chapter 9 header formats; Linux rxe_hdr.h) --------------------
# Field names of BTH, AETH and CNP padding are scapy.contrib.roce's: scapy ships those
# layers and ethlink reuses them; the tests check these tables against scapy's.

BTH = HeaderFormat("BTH", (
    _f("opcode", 8, 0, "opcode", enum=RoceOpcode),
    _f("solicited", 1, 0, "se"),
    _f("migreq", 1, 0, "migreq"),
    _f("padcount", 2, 0, "pad_cnt", doc="pad bytes after the payload, to a 4-byte multiple"),
    _f("version", 4, 0, "tver"),
    _f("pkey", 16, 0xFFFF, "pkey", hex=True, doc="0xFFFF: default full-member partition"),
    _f("fecn", 1, 0, "fecn"),
    _f("becn", 1, 0, "becn"),
    _f("resv6", 6),
    _f("dqpn", 24, 0, "dqpn"),
    _f("ackreq", 1, 0, "ackreq"),
    _f("resv7", 7),
    _f("psn", 24, 0, "psn"),
), "Base Transport Header, 12 B; followed at the end of the packet by the 4 B ICRC")

RETH = HeaderFormat("RETH", (
    _f("va", 64, 0, "reth_va", hex=True),
    _f("rkey", 32, 0, "reth_rkey", hex=True),
    _f("dlen", 32, 0, "reth_dlen", doc="DMA length of the whole message, bytes"),
), "RDMA Extended Transport Header, 16 B")

AETH = HeaderFormat("AETH", (
    _f("syndrome", 8, 0, "aeth_syndrome", hex=True, enum=AethSyndrome),
    _f("msn", 24, 0, "aeth_msn", hex=True),
), "ACK Extended Transport Header, 4 B")

IMMDT = HeaderFormat("ImmDt", (
    _f("imm", 32, 0, "imm", hex=True),
), "Immediate Data, 4 B")

ATOMIC_ETH = HeaderFormat("AtomicETH", (
    _f("va", 64, 0, "atomic_va", hex=True),
    _f("rkey", 32, 0, "atomic_rkey", hex=True),
    _f("swap_add", 64, 0, "atomic_swap_add", hex=True, doc="swap value (CMP_SWAP) or addend (FETCH_ADD)"),
    _f("compare", 64, 0, "atomic_compare", hex=True),
), "Atomic Extended Transport Header, 28 B")

ATOMIC_ACK_ETH = HeaderFormat("AtomicAckETH", (
    _f("orig", 64, 0, "atomic_orig", hex=True, doc="remote data before the atomic operation"),
), "Atomic Acknowledge Extended Transport Header, 8 B")

CNP_PADDING = HeaderFormat("CNPPadding", (
    _f("reserved1", 64, hex=True),
    _f("reserved2", 64, hex=True),
), "RoCEv2 CNP: 16 reserved bytes after the BTH (IBA Annex A17)")


# --- HPCC INT (csrc/hpcc.pxd) --------------------------------------------------------
# Where: after the BTH and the extension headers its opcode requires (RETH, ImmDt, AETH),
# before the payload: the place HPCC's own implementation gives its IntHeader (ns-3
# alibaba-edu/High-Precision-Congestion-Control: after the transport header, before the
# data; the ACK carries it after its ACK header). Putting it right after UDP, as P4.org's
# INT spec v2.1 does for INT over UDP, would hide the BTH from every RoCE decoder.
# Presence: a bit of the IPv4 DSCP, the INT spec v2.1 way of flagging INT over TCP/UDP
# (the operator picks the value or bit): DSCP bit 0, so RoCE's DSCP 26 becomes 27.
# Records: one per switch egress, in path order, with the four values HPCC reads (the paper's
# INT metadata; ns-3 IntHop: line rate, time, bytes, queue length), each a whole 32-bit
# word (the ns-3 bit-packed 8 B layout cannot carry 800 Gb/s nor exact byte counts).
INT_DSCP_BIT = 0x01

HPCC_INT = HeaderFormat("HpccInt", (
    _f("version", 4, 1, doc="format version, 1"),
    _f("resv", 4),
    _f("hop_words", 8, 4, doc="4-byte words per record (INT's HopML): 4"),
    _f("nhop", 8, 0, doc="records that follow, 0..5"),
    _f("resv2", 8),
), "HPCC INT header, 4 B; followed by nhop HpccIntHop records")

HPCC_INT_HOP = HeaderFormat("HpccIntHop", (
    _f("rate_mbps", 32, 0, "rate_mbps", doc="egress link rate, Mb/s"),
    _f("ts_ns", 32, 0, "ts_ns", doc="when the frame started on the egress link, ns, modulo 2^32"),
    _f("tx_bytes", 32, 0, "tx_bytes", doc="frame bytes the egress port had sent, this frame included, modulo 2^32"),
    _f("qlen", 32, 0, "qlen", doc="bytes left in the frame's egress queue after it (saturating)"),
), "HPCC INT record of one switch egress, 16 B")

INT_HOP_KEYS = tuple(f.name for f in HPCC_INT_HOP.fields)


@dataclass(frozen=True, slots=True)
class RoceOpcodeFormat:
    """What follows the BTH for one opcode (Linux rxe_opcode.c rxe_opcode[].mask)."""

    headers: tuple[HeaderFormat, ...]
    payload: bool


_RO = RoceOpcode
ROCE_OPCODES: dict[RoceOpcode, RoceOpcodeFormat] = {
    _RO.SEND_FIRST: RoceOpcodeFormat((), True),
    _RO.SEND_MIDDLE: RoceOpcodeFormat((), True),
    _RO.SEND_LAST: RoceOpcodeFormat((), True),
    _RO.SEND_LAST_IMM: RoceOpcodeFormat((IMMDT,), True),
    _RO.SEND_ONLY: RoceOpcodeFormat((), True),
    _RO.SEND_ONLY_IMM: RoceOpcodeFormat((IMMDT,), True),
    _RO.WRITE_FIRST: RoceOpcodeFormat((RETH,), True),
    _RO.WRITE_MIDDLE: RoceOpcodeFormat((), True),
    _RO.WRITE_LAST: RoceOpcodeFormat((), True),
    _RO.WRITE_LAST_IMM: RoceOpcodeFormat((IMMDT,), True),
    _RO.WRITE_ONLY: RoceOpcodeFormat((RETH,), True),
    _RO.WRITE_ONLY_IMM: RoceOpcodeFormat((RETH, IMMDT), True),
    _RO.READ_REQUEST: RoceOpcodeFormat((RETH,), False),
    _RO.READ_RESPONSE_FIRST: RoceOpcodeFormat((AETH,), True),
    _RO.READ_RESPONSE_MIDDLE: RoceOpcodeFormat((), True),
    _RO.READ_RESPONSE_LAST: RoceOpcodeFormat((AETH,), True),
    _RO.READ_RESPONSE_ONLY: RoceOpcodeFormat((AETH,), True),
    _RO.ACK: RoceOpcodeFormat((AETH,), False),
    _RO.ATOMIC_ACK: RoceOpcodeFormat((AETH, ATOMIC_ACK_ETH), False),
    _RO.CMP_SWAP: RoceOpcodeFormat((ATOMIC_ETH,), False),
    _RO.FETCH_ADD: RoceOpcodeFormat((ATOMIC_ETH,), False),
    _RO.CNP: RoceOpcodeFormat((CNP_PADDING,), False),
}


# --- IEEE 802.1Qbb PFC: scapy.contrib.mac_control.MACControlClassBasedFlowControl ------
# The class-enable vector's high byte is reserved, its low byte holds c7..c0 (c0 is bit 0);
# eight 16-bit pause times c0..c7 in quanta of 512 bit times (IEEE 802.3 Annex 31D).

PFC = HeaderFormat("PFC", (
    _f("_op_code", 16, PFC_OPCODE, hex=True),
    _f("_reserved", 8),
    *(_f(f"c{i}_enabled", 1) for i in range(7, -1, -1)),
    *(_f(f"c{i}_pause_time", 16) for i in range(PFC_CLASSES)),
), "MAC Control PFC frame body, 20 B: opcode, class-enable vector, 8 pause times")


# --- EthLink v1 (ethlink's own compact scale-up format) --------------------------------

EL_BASE = HeaderFormat("ELBase", (
    _f("ver", 4, EL_VERSION, "el_ver"),
    _f("ntx", 4, 0, "el_ntx", derived=True, doc="transaction headers that follow, 0..15"),
    _f("tc", 3, 0, "el_tc", doc="traffic class (defaults to the frame's pcp)"),
    _f("ecn", 2, 0, "el_ecn", enum=Ecn, doc="RFC 3168 codepoint (defaults to the row's ecn)"),
    _f("flags", 3, 0, "el_flags", flags=ElFlags),
    _f("src", 16, 0, "el_src", doc="source GPU id"),
    _f("dst", 16, 0, "el_dst", doc="destination GPU id"),
    _f("resv", 16),
), "EthLink v1 base header, 8 B")

EL_TXN = HeaderFormat("ELTxn", (
    _f("opcode", 8, 0, "opcode", enum=ElOpcode),
    _f("flags", 8, 0, "flags", flags=ElTxnFlags),
    _f("tag", 16, 0, "tag"),
    _f("length", 16, 0, "length", doc="bytes of memory this transaction addresses, 1..4096"),
    _f("resv", 16),
    _f("addr", 64, 0, "addr", hex=True, doc="remote address"),
), "EthLink v1 transaction header, 16 B; columns are the keys of one `el_txns` entry")

# Single-transaction rows may carry the transaction as flat columns instead of `el_txns`.
EL_TXN_COLUMNS: dict[str, str] = {
    "el_opcode": "opcode",
    "el_txn_flags": "flags",
    "el_tag": "tag",
    "el_length": "length",
    "el_addr": "addr",
}

EL_CREDIT = HeaderFormat("ELCredit", (
    _f("vc", 8, 0, "cbfc_vc", doc="virtual channel whose credits are returned"),
    _f("resv8", 8),
    _f("resv16", 16),
    _f("credits", 32, 0, "cbfc_credits", doc="cumulative credits freed, wrapping mod 2**32"),
), "ethlink CBFC credit update, 8 B, after an ELBase with CTRL set and ntx=0")

# Data bytes that follow the transaction headers, per opcode; LENGTH means `length` bytes.
LENGTH = -1
EL_DATA_BYTES: dict[ElOpcode, int] = {
    ElOpcode.LOAD_REQ: 0,
    ElOpcode.LOAD_RESP: LENGTH,
    ElOpcode.STORE: LENGTH,
    ElOpcode.STORE_ACK: 0,
    ElOpcode.ATOMIC_FADD: 8,     # addend
    ElOpcode.ATOMIC_CAS: 16,     # swap, then compare
    ElOpcode.ATOMIC_RESP: 8,     # old value
    ElOpcode.FENCE: 0,
    ElOpcode.FENCE_ACK: 0,
}


def el_data_len(opcode: int, length: int) -> int:
    """Bytes of data one EthLink transaction carries after the headers."""
    n = EL_DATA_BYTES[ElOpcode(opcode)]
    return length if n == LENGTH else n


def _wire_bytes(without_fcs: int) -> int:
    return max(without_fcs, ETH_MIN_FRAME - FCS_BYTES) + FCS_BYTES


def roce_frame_bytes(opcode: int, payload_len: int = 0, pad_cnt: int = 0, int_hops: int | None = None) -> int:
    """`frame_bytes` (FCS included) of a priority-tagged RoCEv2 frame; `int_hops`: the
    HPCC INT records it carries (None: no INT header)."""
    fmt = ROCE_OPCODES[RoceOpcode(opcode)]
    hdr = ETHER_BYTES + DOT1Q_BYTES + IPV4_BYTES + UDP_BYTES + BTH.size
    if int_hops is not None:
        hdr += HPCC_INT.size + HPCC_INT_HOP.size * int_hops
    return _wire_bytes(hdr + sum(h.size for h in fmt.headers) + payload_len + pad_cnt + ICRC_BYTES)


def ethlink_frame_bytes(txns: list[tuple[int, int]]) -> int:
    """`frame_bytes` (FCS included) of an EthLink frame of (opcode, length) transactions."""
    data = sum(el_data_len(op, ln) for op, ln in txns)
    return _wire_bytes(ETHER_BYTES + DOT1Q_BYTES + EL_BASE.size + EL_TXN.size * len(txns) + data)


# --- Ultra Ethernet transport (UET 1.0, June 2025, section 3.5 PDS and 3.4 SES) --------
# The layouts follow the public reimplementations written from the specification:
# xdp2 `include/uet/pds.h` (Tom Herbert; struct uet_pds_rud_rod_request, uet_pds_ack,
# uet_pds_ack_cc with its NSCC state, uet_pds_nack) for the PDS, and the 44 B standard SES
# request (UET_HDR_REQUEST_STD, SOM=1; spec figures 3-9/3-10, as the ns-3 UET models size
# it). They were not checked byte for byte against the specification PDF. Wireshark 4.0
# (this machine's tshark) has no UET dissector: it decodes Ethernet/IPv4/UDP and shows
# the UET headers as UDP payload.

UET_UDP_PORT = 4793            # IANA: Ultra Ethernet Transport
UET_TRIMMED_DSCP = 46          # DSCP a switch re-marks trimmed frames with; the spec leaves
                               # the trimmed DSCP to configuration: ethlink uses EF (RFC 3246)


class UetPdsType(IntEnum):
    """PDS prologue `type` (xdp2 enum uet_pds_pkt_type)."""

    RUD_REQ = 2
    ROD_REQ = 3
    ACK = 7
    ACK_CC = 8
    NACK = 10


class UetNextHeader(IntEnum):
    """PDS prologue `next_hdr`: the SES header that follows."""

    NONE = 0
    REQUEST_SMALL = 1
    REQUEST_MEDIUM = 2
    REQUEST_STD = 3


class SesOpcode(IntEnum):
    """SES request opcodes (UET 1.0 table 3-17); the engine sends UET_WRITE."""

    NO_OP = 0x00
    WRITE = 0x01
    READ = 0x02
    SEND = 0x05


class UetNackCode(IntEnum):
    """PDS NACK codes ethlink sends (xdp2 enum uet_pds_nack_code)."""

    TRIMMED = 0x01
    TRIMMED_LASTHOP = 0x02


PDS_RUD_REQ = HeaderFormat("PDSRudReq", (
    _f("type", 5, int(UetPdsType.RUD_REQ), enum=UetPdsType),
    _f("next_hdr", 4, int(UetNextHeader.REQUEST_STD), enum=UetNextHeader),
    _f("rsvd1", 2),
    _f("retrans", 1, 0, "pds_retrans"),
    _f("ackreq", 1, 1, "pds_ackreq"),
    _f("syn", 1, 0),
    _f("rsvd2", 2),
    _f("clear_psn_offset", 16, 0, "pds_clear_psn_offset"),
    _f("psn", 32, 0, "pds_psn"),
    _f("spdcid", 16, 0, "pds_spdcid"),
    _f("dpdcid", 16, 0, "pds_dpdcid"),
), "PDS RUD request, 12 B: prologue (type, next header, flags), clear PSN offset, PSN, PDC ids")

SES_STD = HeaderFormat("SESStd", (
    _f("rsvd1", 2),
    _f("opcode", 6, int(SesOpcode.WRITE), "ses_opcode", enum=SesOpcode),
    _f("version", 2),
    _f("dc", 1, 0, doc="delivery complete"),
    _f("ie", 1, 0, doc="initiator error"),
    _f("rel", 1, 0, doc="relative addressing"),
    _f("hd", 1, 0, doc="header data present"),
    _f("eom", 1, 0, "ses_eom"),
    _f("som", 1, 0, "ses_som"),
    _f("message_id", 16, 0, "ses_message_id"),
    _f("ri_generation", 8, 0),
    _f("job_id", 24, 0, "ses_job_id"),
    _f("rsvd2", 4),
    _f("pid_on_fep", 12, 0),
    _f("rsvd3", 4),
    _f("resource_index", 12, 0),
    _f("buffer_offset", 64, 0, "ses_buffer_offset", hex=True),
    _f("initiator", 32, 0, hex=True),
    _f("memory_key", 64, 0, hex=True),
    _f("header_data", 64, 0, hex=True),
    _f("request_length", 32, 0, "ses_request_length"),
), "SES standard request header, 44 B")

PDS_ACK_CC = HeaderFormat("PDSAckCC", (
    _f("type", 5, int(UetPdsType.ACK_CC), enum=UetPdsType),
    _f("next_hdr", 4, 0, enum=UetNextHeader),
    _f("rsvd1", 1),
    _f("ecn_marked", 1, 0, "pds_ecn_marked"),
    _f("retrans", 1, 0),
    _f("probe", 1, 0),
    _f("request", 2, 0),
    _f("rsvd2", 1),
    _f("ack_psn_offset", 16, 0, "pds_ack_psn_offset"),
    _f("cack_psn", 32, 0, "pds_cack_psn"),
    _f("spdcid", 16, 0, "pds_spdcid"),
    _f("dpdcid", 16, 0, "pds_dpdcid"),
    _f("cc_type", 4, 0, doc="0: NSCC"),
    _f("cc_flags", 4, 0),
    _f("mpr", 8, 0),
    _f("sack_psn_offset", 16, 1, "pds_sack_psn_offset", doc="bitmap base - CACK_PSN"),
    _f("sack_bitmap", 64, 0, "pds_sack_bitmap", hex=True),
    _f("service_time", 16, 0),
    _f("restore_cwnd", 1, 0),
    _f("rcv_cwnd_pend", 7, 0),
    _f("rcvd_bytes", 24, 0),
    _f("ooo_count", 16, 0),
), "PDS ACK_CC with SACK bitmap and NSCC state, 32 B")

PDS_NACK = HeaderFormat("PDSNack", (
    _f("type", 5, int(UetPdsType.NACK), enum=UetPdsType),
    _f("next_hdr", 4, 0, enum=UetNextHeader),
    _f("rsvd1", 1),
    _f("ecn_marked", 1, 0, "pds_ecn_marked"),
    _f("retrans", 1, 0),
    _f("nack_type", 1, 0, doc="0: RUD/ROD"),
    _f("rsvd2", 3),
    _f("nack_code", 8, int(UetNackCode.TRIMMED), "pds_nack_code", enum=UetNackCode),
    _f("vendor_code", 8, 0),
    _f("nack_psn", 32, 0, "pds_psn"),
    _f("spdcid", 16, 0, "pds_spdcid"),
    _f("dpdcid", 16, 0, "pds_dpdcid"),
    _f("nack_payload", 32, 0, doc="the spec's `payload` field (renamed: scapy reserves the name)"),
), "PDS NACK, 16 B")


def uet_frame_bytes(kind: str, payload_len: int = 0) -> int:
    """`frame_bytes` (FCS included) of a UET frame: data ("uet"), or a control frame
    ("ack": PDS ACK_CC, "nack": PDS NACK)."""
    hdr = ETHER_BYTES + DOT1Q_BYTES + IPV4_BYTES + UDP_BYTES
    body = {"uet": PDS_RUD_REQ.size + SES_STD.size + payload_len, "ack": PDS_ACK_CC.size,
            "nack": PDS_NACK.size}[kind]
    return _wire_bytes(hdr + body)


# --- the trace row --------------------------------------------------------------------

REQUIRED = object()


@dataclass(frozen=True, slots=True)
class Column:
    """A trace column the builder reads: its default when absent (None or NaN counts as
    absent) and, for an integer column, its width and value names."""

    default: Any
    doc: str
    bits: int = 0
    enum: type[IntEnum] | None = None
    flags: type[IntFlag] | None = None

    def spec(self, name: str) -> FieldSpec:
        return FieldSpec(name, self.bits, column=name, enum=self.enum, flags=self.flags)


_COMMON = {
    "frame_kind": Column(REQUIRED, "FrameKind value"),
    "frame_bytes": Column(None, "Ethernet frame length with FCS, >= 64; required for raw, "
                                "cross-checked against the built frame otherwise", 16),
    "src_mac": Column(0, "source MAC", 48),
    "dst_mac": Column(0, "destination MAC (pfc always uses 01:80:C2:00:00:01)", 48),
    "pcp": Column(0, "802.1Q priority of the tag (all kinds but pfc)", 3),
    "ip_src": Column(0, "IPv4 source", 32),
    "ip_dst": Column(0, "IPv4 destination", 32),
    "dscp": Column(26, "IPv4 DSCP", 6),
    "ecn": Column(int(Ecn.NOT_ECT), "RFC 3168 codepoint (IPv4 TOS, or ELBase ecn)", 2, Ecn),
    "ttl": Column(64, "IPv4 TTL", 8),
    "udp_sport": Column(ROCEV2_DEFAULT_SPORT, "UDP source port (flow entropy)", 16),
    "payload_len": Column(0, "RoCE payload bytes, pad bytes excluded", 16),
    "el_txns": Column(None, "EthLink transactions: a list of mappings with keys opcode, flags, "
                            "tag, length, addr and, for atomic data, swap_add, compare, orig"),
    "pfc_vector": Column(0, "PFC class-enable bits, c0 = bit 0", 8),
    "pfc_times": Column((0,) * PFC_CLASSES, "8 PFC pause times c0..c7, quanta"),
    "el_tc": Column(None, "ELBase.tc; defaults to pcp", 3),
    "el_ecn": Column(None, "ELBase.ecn; defaults to ecn", 2, Ecn),
    "el_ntx": Column(None, "ELBase.ntx; derived, cross-checked when given", 4),
    "int_hops": Column(None, "HPCC INT records (roce): a list of mappings with keys rate_mbps, ts_ns, "
                             "tx_bytes, qlen, one per switch; None: no INT header (an empty list: the header alone)"),
    "pds_type": Column(int(UetPdsType.ACK_CC), "uet_ctrl frames: the PDS type (ACK_CC or NACK)", 5, UetPdsType),
}

COLUMNS: dict[str, Column] = {}
for _fmt in (BTH, RETH, AETH, IMMDT, ATOMIC_ETH, ATOMIC_ACK_ETH, EL_BASE, EL_CREDIT,
             PDS_RUD_REQ, SES_STD, PDS_ACK_CC, PDS_NACK):
    for _s in _fmt.fields:
        if _s.column is not None:
            COLUMNS[_s.column] = Column(_s.default, f"{_fmt.name}.{_s.name}", _s.bits, _s.enum, _s.flags)
for _col, _key in EL_TXN_COLUMNS.items():
    _s = EL_TXN[_key]
    COLUMNS[_col] = Column(_s.default, f"ELTxn.{_key} of a single-transaction row", _s.bits, _s.enum, _s.flags)
COLUMNS.update(_COMMON)
del _fmt, _s, _col, _key
