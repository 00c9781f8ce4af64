"""ethlink.frames: golden wire bytes, decode round trips, ICRC, length checks, pcap export.

Golden vectors are written out by hand from the formats (PROTOCOLS.md and the EthLink v1
layout); their IPv4/UDP checksums and ICRCs come from the independent RFC 1071 / RFC 768 /
IBA Annex A17 helpers below, which are themselves checked against a RoCEv2 CNP captured
on a ConnectX-4 Lx (scapy's test/contrib/roce.uts). tshark, when installed, is a third
decoder of the same frames.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib

import pytest
from scapy.contrib.mac_control import MACControlClassBasedFlowControl
from scapy.fields import BitField, FCSField
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Padding, Raw
from scapy.utils import rdpcap

from ethlink import frames as fr
from ethlink.frames import fields as F

MAC_A, MAC_B = fr.mac_of_port(1), fr.mac_of_port(2)
IP_A, IP_B = fr.ip_of_host(0), fr.ip_of_host(1)
L2 = dict(src_mac=MAC_A, dst_mac=MAC_B)
L3 = dict(L2, ip_src=IP_A, ip_dst=IP_B)
ETH_TAGGED = 18            # Ether 14 + 802.1Q tag 4
ROCE_HDRS = 18 + 20 + 8 + 12   # Ether+tag, IPv4, UDP, BTH
ICRC = FCS = 4


# --- independent reference implementations ---------------------------------------------

def _ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ipv4_checksum(hdr: bytes) -> int:
    """RFC 1071 checksum of a 20 B IPv4 header, its checksum field taken as zero."""
    return 0xFFFF - _ones_sum(hdr[:10] + b"\0\0" + hdr[12:20])


def udp_checksum(ip: bytes) -> int:
    """RFC 768 checksum of the UDP datagram in an IPv4 packet (no options)."""
    seg = ip[20:]
    pseudo = ip[12:20] + bytes([0, 17]) + struct.pack("!H", len(seg))
    return (0xFFFF - _ones_sum(pseudo + seg[:6] + b"\0\0" + seg[8:])) or 0xFFFF


def icrc(ip_packet: bytes) -> bytes:
    """IBA Annex A17 ICRC (wire bytes) of an IPv4 RoCEv2 packet given without its ICRC:
    CRC32 of 8 B of 0xFF and the packet with TOS, TTL, IP checksum, UDP checksum and the
    BTH FECN/BECN/reserved byte set to ones, least significant byte first."""
    b = bytearray(ip_packet)
    b[1] = 0xFF
    b[8] = 0xFF
    b[10:12] = b"\xff\xff"
    b[26:28] = b"\xff\xff"
    b[32] = 0xFF
    return struct.pack("<I", zlib.crc32(b"\xff" * 8 + bytes(b)))


def counting(start: int, n: int) -> bytes:
    return bytes((start + i) & 0xFF for i in range(n))


def mac_int(s: str) -> int:
    return int(s.replace(":", ""), 16)


def ip_int(s: str) -> int:
    return int.from_bytes(bytes(int(x) for x in s.split(".")), "big")


CX4_CNP = bytes.fromhex(
    "e41d2dab2bc27cfe90643b32080045c2003c718c400040119161"
    "0a0011010a001201000012b700280000"
    "8100ffff40000118" + "00" * 20 +   # BTH (CNP, BECN, dqpn 0x118), 4 + 16 reserved bytes
    "82fd002a")


def test_reference_icrc_matches_a_connectx4_capture():
    """The reference ICRC and checksum agree with a CNP captured on real hardware."""
    ip = CX4_CNP[14:]
    assert icrc(ip[:-ICRC]) == bytes.fromhex("82fd002a")
    assert ipv4_checksum(ip) == 0x9161


def test_cnp_transport_bytes_match_a_connectx4_capture():
    """The CNP's BTH and reserved bytes are the captured ones. (Its ICRC cannot be compared:
    the ICRC covers the IP identification, which the trace does not carry.)"""
    pkt = Ether(CX4_CNP)
    row = dict(frame_kind="cnp", dqpn=pkt[fr.BTH].dqpn, frame_bytes=len(CX4_CNP) + 4 + FCS)
    raw = fr.build_frame(row)
    assert raw[ETH_TAGGED + 20 + 8:-ICRC] == CX4_CNP[14 + 20 + 8:-ICRC]
    assert raw[-ICRC:] == icrc(raw[ETH_TAGGED:-ICRC])


# --- golden vectors written out by hand ----------------------------------------------

MACS = "020000000002" "020000000001"   # dst, src
GOLDEN = {
    "pfc": (
        dict(frame_kind="pfc", src_mac=MAC_A, dst_mac=MAC_B, frame_bytes=64, pfc_vector=0b1001,
             pfc_times=[0xFFFF, 0, 0, 0x1234, 0, 0, 0, 0]),
        "0180c2000001" "020000000001" "8808"       # 802.3 MAC Control multicast, untagged
        "0101" "0009"                               # PFC opcode, class-enable c0|c3
        "ffff" "0000" "0000" "1234" "0000" "0000" "0000" "0000"
        + "00" * 26),                               # to 60 B (+FCS = 64)
    "cnp": (
        dict(frame_kind="cnp", **L3, pcp=3, dscp=48, dqpn=0xD2, frame_bytes=82),
        MACS + "8100" "6000" "0800"                 # tag: prio 3, VLAN 0
        "45c0003c00004000" "401125ef" "0a000001" "0a000002"   # TOS = DSCP 48, len 60, DF
        "c000" "12b7" "0028" "a2b6"                 # sport 0xC000, dport 4791
        "81" "00" "ffff" "40" "0000d2" "00" "000000"  # BTH: CNP, BECN, dqpn 0xd2
        + "00" * 16 +                               # reserved
        "28bf8b9b"),                                # ICRC
    "nak": (
        dict(frame_kind="roce", **L3, pcp=3, ecn=F.Ecn.ECT0, udp_sport=0xC123, opcode=F.RoceOpcode.ACK,
             dqpn=0x102, psn=0xABCD, aeth_syndrome=F.AethSyndrome.NAK_PSN_SEQ_ERROR, aeth_msn=0x42,
             frame_bytes=ROCE_HDRS + 4 + ICRC + FCS),
        MACS + "8100" "6000" "0800"
        "456a003000004000" "40112651" "0a000001" "0a000002"   # TOS = DSCP 26 | ECT(0)
        "c123" "12b7" "001c" "9ea1"
        "11" "00" "ffff" "00" "000102" "00" "00abcd"
        "60" "000042"                               # AETH: NAK PSN sequence error, MSN 0x42
        "38242301"),
    "ethlink_store": (
        dict(frame_kind="ethlink", **L2, pcp=2, el_src=1, el_dst=7, el_flags=F.ElFlags.ACK_REQUESTED,
             frame_bytes=64, el_txns=[dict(opcode=F.ElOpcode.STORE, flags=F.ElTxnFlags.WANT_COMPLETION,
                                           tag=0x102, length=8, addr=0x10_0000_0040)]),
        MACS + "8100" "4000" "88b5"
        "11" "42" "0001" "0007" "0000"              # ver 1 ntx 1 | tc 2 ecn 0 flags ACK_REQ
        "03" "01" "0102" "0008" "0000" "0000001000000040"
        "4041424344454647"                          # data: low byte of each address
        + "00" * 10),
    "ethlink_coalesced": (
        dict(frame_kind="ethlink", **L2, pcp=1, ecn=F.Ecn.CE, el_src=0x10, el_dst=0x20, frame_bytes=90,
             el_txns=[dict(opcode=F.ElOpcode.STORE, tag=1, length=4, addr=0xFE),
                      dict(opcode=F.ElOpcode.LOAD_REQ, flags=1, tag=2, length=64, addr=0x2000),
                      dict(opcode=F.ElOpcode.ATOMIC_FADD, flags=1, tag=3, length=8, addr=0x3000, swap_add=7)]),
        MACS + "8100" "2000" "88b5"
        "13" "38" "0010" "0020" "0000"              # ntx 3 | tc 1 ecn CE
        "03" "00" "0001" "0004" "0000" "00000000000000fe"
        "01" "01" "0002" "0040" "0000" "0000000000002000"
        "05" "01" "0003" "0008" "0000" "0000000000003000"
        "feff0001"                                  # STORE data, wrapping
        "0000000000000007"),                        # FADD addend
    "cbfc": (
        dict(frame_kind="cbfc", **L2, pcp=5, el_src=3, el_dst=4, cbfc_vc=5, cbfc_credits=0x12345, frame_bytes=64),
        MACS + "8100" "a000" "88b5"
        "10" "a1" "0003" "0004" "0000"              # ntx 0 | tc 5 flags CTRL
        "05" "00" "0000" "00012345"
        + "00" * 26),
    "raw": (
        dict(frame_kind="raw", **L2, pcp=7, frame_bytes=64),
        MACS + "8100" "e000" "88b6" + "00" * 42),
}


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_bytes(name):
    row, hexstr = GOLDEN[name]
    assert fr.build_frame(row).hex() == hexstr


@pytest.mark.parametrize("name", ["cnp", "nak"])
def test_golden_checksums_are_self_consistent(name):
    """The hand-written checksums and ICRC are what the reference algorithms give."""
    ip = bytes.fromhex(GOLDEN[name][1])[ETH_TAGGED:]
    assert int.from_bytes(ip[10:12], "big") == ipv4_checksum(ip)
    assert int.from_bytes(ip[26:28], "big") == udp_checksum(ip)
    assert ip[-ICRC:] == icrc(ip[:-ICRC])


# --- every kind: decode the built bytes and compare with the row, field by field ---------

# row column -> (layer, scapy field): written by hand, independent of fields.py's mapping
BTH_MAP = dict(opcode="opcode", se="solicited", migreq="migreq", pad_cnt="padcount", tver="version",
               pkey="pkey", fecn="fecn", becn="becn", dqpn="dqpn", ackreq="ackreq", psn="psn")
EXT_MAP = {
    fr.RETH: dict(reth_va="va", reth_rkey="rkey", reth_dlen="dlen"),
    fr.AETH: dict(aeth_syndrome="syndrome", aeth_msn="msn"),
    fr.ImmDt: dict(imm="imm"),
    fr.AtomicETH: dict(atomic_va="va", atomic_rkey="rkey", atomic_swap_add="swap_add", atomic_compare="compare"),
    fr.AtomicAckETH: dict(atomic_orig="orig"),
}
RC = F.RoceOpcode


def roce(opcode, payload_len=0, ext=0, **kw):
    return dict(frame_kind="roce", **L3, pcp=3, opcode=opcode, dqpn=0xABCDE, psn=0xFFFFF0, payload_len=payload_len,
                frame_bytes=ROCE_HDRS + ext + payload_len + kw.get("pad_cnt", 0) + ICRC + FCS, **kw)


RETH_ROW = dict(reth_va=0x7F00_1234_5000, reth_rkey=0x1234, reth_dlen=8192)
CASES = {
    "write_first": (roce(RC.WRITE_FIRST, 1024, 16, **RETH_ROW, ecn=F.Ecn.CE, udp_sport=0xD00D),
                    ["RETH", "Raw"]),
    "write_middle": (roce(RC.WRITE_MIDDLE, 1024, fecn=1, tver=0), ["Raw"]),
    "write_last_padded": (roce(RC.WRITE_LAST, 13, pad_cnt=3, ackreq=1), ["Raw"]),
    "write_only_imm": (roce(RC.WRITE_ONLY_IMM, 200, 16 + 4, **RETH_ROW, imm=0xCAFEF00D, se=1), ["RETH", "ImmDt", "Raw"]),
    "send_last_imm": (roce(RC.SEND_LAST_IMM, 64, 4, imm=7, pkey=0x8001), ["ImmDt", "Raw"]),
    "read_request": (roce(RC.READ_REQUEST, 0, 16, **RETH_ROW, migreq=1), ["RETH"]),
    "read_response_first": (roce(RC.READ_RESPONSE_FIRST, 1024, 4, aeth_syndrome=F.AethSyndrome.ACK_UNLIMITED,
                                 aeth_msn=9), ["AETH", "Raw"]),
    "read_response_middle": (roce(RC.READ_RESPONSE_MIDDLE, 1024), ["Raw"]),
    "ack": (roce(RC.ACK, 0, 4, aeth_syndrome=F.AethSyndrome.ACK_UNLIMITED, aeth_msn=0xFFFFFF), ["AETH"]),
    "nak": (roce(RC.ACK, 0, 4, aeth_syndrome=F.AethSyndrome.NAK_PSN_SEQ_ERROR, aeth_msn=3), ["AETH"]),
    "fetch_add": (roce(RC.FETCH_ADD, 0, 28, atomic_va=0x1000, atomic_rkey=0xBEEF, atomic_swap_add=1,
                       atomic_compare=0), ["AtomicETH"]),
    "cmp_swap": (roce(RC.CMP_SWAP, 0, 28, atomic_va=0x2000, atomic_rkey=0xBEEF, atomic_swap_add=2 ** 64 - 1,
                      atomic_compare=0x55), ["AtomicETH"]),
    "atomic_ack": (roce(RC.ATOMIC_ACK, 0, 4 + 8, aeth_syndrome=0x1F, aeth_msn=5, atomic_orig=0x0123_4567_89AB_CDEF),
                   ["AETH", "AtomicAckETH"]),
    "cnp": (dict(frame_kind="cnp", **L3, pcp=6, dscp=48, dqpn=0xD2, frame_bytes=ROCE_HDRS + 16 + ICRC + FCS),
            ["CNPPadding"]),
    "pfc": (GOLDEN["pfc"][0], []),
    "ethlink_store": (GOLDEN["ethlink_store"][0], []),
    "ethlink_coalesced": (GOLDEN["ethlink_coalesced"][0], []),
    "ethlink_load_resp_columns": (
        dict(frame_kind="ethlink", **L2, pcp=4, el_src=2, el_dst=9, el_opcode=F.ElOpcode.LOAD_RESP, el_tag=77,
             el_length=256, el_addr=0x4000_0080, el_txn_flags=0, frame_bytes=ETH_TAGGED + 8 + 16 + 256 + FCS), []),
    "ethlink_cas_resp_columns": (
        dict(frame_kind="ethlink", **L2, el_opcode=F.ElOpcode.ATOMIC_RESP, el_tag=5, el_length=8, el_addr=0x80,
             atomic_orig=0xAAAA, frame_bytes=64), []),
    "cbfc": (GOLDEN["cbfc"][0], []),
    "raw": (dict(frame_kind="raw", **L2, pcp=1, frame_bytes=1518), []),
}


def _check_tagged(pkt, row, ethertype):
    assert mac_int(pkt[Ether].dst) == row["dst_mac"] and mac_int(pkt[Ether].src) == row["src_mac"]
    assert pkt[Ether].type == 0x8100
    assert (pkt[Dot1Q].prio, pkt[Dot1Q].dei, pkt[Dot1Q].vlan, pkt[Dot1Q].type) == (row.get("pcp", 0), 0, 0, ethertype)


def _check_roce(pkt, row, exts):
    _check_tagged(pkt, row, 0x0800)
    ip, udp, bth = pkt[IP], pkt[UDP], pkt[fr.BTH]
    assert (ip_int(ip.src), ip_int(ip.dst)) == (row["ip_src"], row["ip_dst"])
    assert (ip.tos >> 2, ip.tos & 3, ip.ttl) == (row.get("dscp", 26), row.get("ecn", 0), row.get("ttl", 64))
    assert ip.len == row["frame_bytes"] - ETH_TAGGED - FCS
    assert (udp.sport, udp.dport, udp.len) == (row.get("udp_sport", 0xC000), 4791, ip.len - 20)
    assert ip.chksum == ipv4_checksum(bytes(ip)[:20])
    kind_defaults = dict(opcode=0x81, becn=1) if row["frame_kind"] == "cnp" else {}
    for col, name in BTH_MAP.items():
        want = kind_defaults.get(col, row.get(col, 0xFFFF if col == "pkey" else 0))
        assert getattr(bth, name) == want, col
    assert [type(layer).__name__ for layer in bth.payload.iterpayloads()] == exts
    for layer_cls, cols in EXT_MAP.items():
        if layer_cls.__name__ in exts:
            for col, name in cols.items():
                assert getattr(pkt[layer_cls], name) == row.get(col, 0), col
    if "Raw" in exts:
        assert pkt[Raw].load == counting(row["psn"], row["payload_len"]) + bytes(row.get("pad_cnt", 0))
    raw = bytes(pkt)
    assert raw[-ICRC:] == icrc(raw[ETH_TAGGED:-ICRC])


def _check_pfc(pkt, row):
    assert mac_int(pkt[Ether].dst) == 0x0180C2000001 and mac_int(pkt[Ether].src) == row["src_mac"]
    assert pkt[Ether].type == 0x8808 and Dot1Q not in pkt
    pfc = pkt[MACControlClassBasedFlowControl]
    assert pfc._op_code == 0x0101
    for i in range(8):
        assert getattr(pfc, f"c{i}_enabled") == (row["pfc_vector"] >> i) & 1
        assert getattr(pfc, f"c{i}_pause_time") == row["pfc_times"][i]


def _txns_of(row):
    if "el_txns" in row:
        return row["el_txns"]
    return [dict(opcode=row["el_opcode"], flags=row.get("el_txn_flags", 0), tag=row.get("el_tag", 0),
                 length=row["el_length"], addr=row.get("el_addr", 0), orig=row.get("atomic_orig", 0))]


def _check_ethlink(pkt, row):
    _check_tagged(pkt, row, 0x88B5)
    base, txns = pkt[fr.ELBase], _txns_of(row)
    assert (base.ver, base.ntx, base.src, base.dst) == (1, len(txns), row.get("el_src", 0), row.get("el_dst", 0))
    assert (base.tc, base.ecn, int(base.flags)) == (row.get("pcp", 0), row.get("ecn", 0), row.get("el_flags", 0))
    decoded = [pkt[fr.ELTxn:i + 1] for i in range(len(txns))]
    assert fr.ELTxn not in decoded[-1].payload
    data = b""
    for t, d in zip(txns, decoded):
        assert (d.opcode, int(d.flags), d.tag, d.length, d.addr, d.resv) == (
            t["opcode"], t.get("flags", 0), t.get("tag", 0), t["length"], t.get("addr", 0), 0)
        data += {F.ElOpcode.STORE: counting(t.get("addr", 0), t["length"]),
                 F.ElOpcode.LOAD_RESP: counting(t.get("addr", 0), t["length"]),
                 F.ElOpcode.ATOMIC_FADD: t.get("swap_add", 0).to_bytes(8, "big"),
                 F.ElOpcode.ATOMIC_RESP: t.get("orig", 0).to_bytes(8, "big")}.get(t["opcode"], b"")
    assert (pkt[Raw].load if Raw in pkt else b"") == data
    pad = pkt[Padding].load if Padding in pkt else b""
    assert pad == bytes(len(pad)) and ETH_TAGGED + 8 + 16 * len(txns) + len(data) + len(pad) == len(pkt)


def _check_cbfc(pkt, row):
    _check_tagged(pkt, row, 0x88B5)
    base, credit = pkt[fr.ELBase], pkt[fr.ELCredit]
    assert (base.ver, base.ntx, int(base.flags), base.tc) == (1, 0, int(F.ElFlags.CTRL), row["pcp"])
    assert (base.src, base.dst) == (row["el_src"], row["el_dst"])
    assert (credit.vc, credit.credits, credit.resv8, credit.resv16) == (row["cbfc_vc"], row["cbfc_credits"], 0, 0)
    assert pkt[Padding].load == bytes(26)


@pytest.mark.parametrize("name", CASES)
def test_decode_matches_row(name):
    row, exts = CASES[name]
    raw = fr.build_frame(row)
    assert len(raw) == row["frame_bytes"] - FCS
    pkt = fr.to_scapy(row)
    assert bytes(pkt) == raw
    kind = row["frame_kind"]
    if kind in ("roce", "cnp"):
        _check_roce(pkt, row, exts)
    elif kind == "pfc":
        _check_pfc(pkt, row)
    elif kind == "ethlink":
        _check_ethlink(pkt, row)
    elif kind == "cbfc":
        _check_cbfc(pkt, row)
    else:
        _check_tagged(pkt, row, 0x88B6)
        assert pkt[Raw].load == bytes(row["frame_bytes"] - ETH_TAGGED - FCS)


def test_frame_bytes_helpers_agree_with_the_builder():
    for name, (row, _) in CASES.items():
        if row["frame_kind"] == "roce":
            assert fr.roce_frame_bytes(row["opcode"], row["payload_len"], row.get("pad_cnt", 0)) == row["frame_bytes"]
        elif row["frame_kind"] == "ethlink":
            txns = [(t["opcode"], t["length"]) for t in _txns_of(row)]
            assert fr.ethlink_frame_bytes(txns) == row["frame_bytes"], name


def test_flat_columns_and_el_txns_build_the_same_frame():
    flat, _ = CASES["ethlink_load_resp_columns"]
    nested = {k: v for k, v in flat.items() if not k.startswith("el_") or k in ("el_src", "el_dst")}
    nested["el_txns"] = [dict(opcode=F.ElOpcode.LOAD_RESP, tag=77, length=256, addr=0x4000_0080)]
    assert fr.build_frame(nested) == fr.build_frame(flat)


def test_enum_columns_take_member_names():
    """Dictionary-encoded trace columns give enum names, not numbers."""
    row, _ = CASES["write_first"]
    assert fr.build_frame(dict(row, opcode="WRITE_FIRST", ecn="CE")) == fr.build_frame(row)
    el = GOLDEN["ethlink_coalesced"][0]
    txns = [dict(t, opcode=F.ElOpcode(t["opcode"]).name) for t in el["el_txns"]]
    assert fr.build_frame(dict(el, el_txns=txns)) == fr.build_frame(el)


def test_absent_and_none_columns_take_defaults():
    """Arrow rows carry None for columns a kind does not use."""
    row = dict(CASES["ack"][0], imm=None, reth_va=None, payload_len=None, pkey=None, el_txns=None)
    assert fr.build_frame(row) == fr.build_frame(CASES["ack"][0])
    assert fr.decode(fr.build_frame(row))[fr.BTH].pkey == 0xFFFF


# --- field tables against scapy's own layers -----------------------------------------

def _widths(cls):
    out = []
    for f in cls.fields_desc:
        if isinstance(f, FCSField):
            continue
        out.append((f.name, f.size if isinstance(f, BitField) else f.sz * 8))
    return out


@pytest.mark.parametrize("fmt", [F.BTH, F.AETH, F.CNP_PADDING, F.PFC, F.RETH, F.IMMDT, F.ATOMIC_ETH,
                                 F.ATOMIC_ACK_ETH, F.EL_BASE, F.EL_TXN, F.EL_CREDIT], ids=lambda f: f.name)
def test_field_tables_describe_the_layers(fmt):
    cls = fr.layers.LAYERS[fmt.name]
    assert _widths(cls) == [(f.name, f.bits) for f in fmt.fields]
    assert len(cls().self_build()) == fmt.size


def test_header_sizes():
    sizes = {f.name: f.size for f in (F.BTH, F.RETH, F.AETH, F.IMMDT, F.ATOMIC_ETH, F.ATOMIC_ACK_ETH,
                                       F.CNP_PADDING, F.EL_BASE, F.EL_TXN, F.EL_CREDIT)}
    assert sizes == dict(BTH=12, RETH=16, AETH=4, ImmDt=4, AtomicETH=28, AtomicAckETH=8, CNPPadding=16,
                         ELBase=8, ELTxn=16, ELCredit=8)
    assert F.EL_BASE.layout() == [("ver", 0, 4), ("ntx", 4, 4), ("tc", 8, 3), ("ecn", 11, 2), ("flags", 13, 3),
                                  ("src", 16, 16), ("dst", 32, 16), ("resv", 48, 16)]


def test_scapy_builds_ntx_when_left_unset():
    pkt = Ether() / Dot1Q(type=0x88B5) / fr.ELBase() / fr.ELTxn(opcode=1, length=8) / fr.ELTxn(opcode=8)
    assert fr.decode(bytes(pkt))[fr.ELBase].ntx == 2


# --- errors -------------------------------------------------------------------------

def test_length_mismatch_names_frame_bytes_and_both_lengths():
    row = dict(CASES["write_first"][0], frame_bytes=1100)
    with pytest.raises(ValueError, match=r"frame_bytes=1100 .* 1106 B"):
        fr.build_frame(row)
    with pytest.raises(ValueError, match="frame_bytes=63"):
        fr.build_frame(dict(GOLDEN["raw"][0], frame_bytes=63))


@pytest.mark.parametrize("patch, match", [
    (dict(psn=1 << 24), "psn=16777216 does not fit the 24-bit field BTH.psn"),
    (dict(pcp=8), "pcp=8"),
    (dict(ecn=4), "ecn=4"),
    (dict(reth_rkey=-1), "reth_rkey=-1"),
    (dict(opcode=0x15), "opcode=0x15 is not an RC opcode"),
    (dict(opcode="WRITE_FIRSTT"), "opcode='WRITE_FIRSTT' is not a RoceOpcode name"),
    (dict(opcode=RC.READ_REQUEST), "payload_len=1024 but READ_REQUEST carries no payload"),
    (dict(frame_kind="rocev3"), "frame_kind='rocev3'"),
])
def test_bad_fields_raise(patch, match):
    with pytest.raises(ValueError, match=match):
        fr.build_frame(dict(CASES["write_first"][0], **patch))


@pytest.mark.parametrize("patch, match", [
    (dict(el_ntx=2), "el_ntx=2 but the row carries 3 transactions"),
    (dict(el_ver=2), "el_ver=2"),
    (dict(el_flags=F.ElFlags.CTRL), "CTRL"),
    (dict(el_txns=[dict(opcode=0x0A, length=8)]), r"el_txns\[0\].opcode=0xa"),
    (dict(el_txns=[dict(opcode=F.ElOpcode.STORE, length=4097)]), r"el_txns\[0\].length=4097"),
    (dict(el_txns=[dict(opcode=F.ElOpcode.FENCE)] * 16), "ntx=16 does not fit"),
])
def test_bad_ethlink_rows_raise(patch, match):
    row = dict(GOLDEN["ethlink_coalesced"][0], **patch)
    row.pop("frame_bytes")
    with pytest.raises(ValueError, match=match):
        fr.build_frame(row)


def test_pfc_needs_eight_times():
    with pytest.raises(ValueError, match="pfc_times has 7 entries"):
        fr.build_frame(dict(frame_kind="pfc", pfc_times=[0] * 7))


# --- FCS, addresses ---------------------------------------------------------------------

def test_fcs_is_the_ethernet_crc():
    raw = fr.build_frame(GOLDEN["pfc"][0])
    full = fr.build_frame(GOLDEN["pfc"][0], with_fcs=True)
    assert full[:-4] == raw and len(full) == 64
    assert zlib.crc32(full) == 0x2144DF1C   # CRC-32 residue of a frame with a correct FCS


def test_address_plans():
    assert fr.mac_of_port(0) == 0x02_00_00_00_00_00 and fr.mac_of_port(0xA0B0C0D) == 0x02_00_0A_0B_0C_0D
    for p in (0, 1, 2 ** 32 - 1):
        first_octet = fr.mac_of_port(p) >> 40
        assert first_octet & 0b11 == 0b10   # locally administered, unicast
    assert fr.ip_of_host(0) == 0x0A000001 and fr.ip_of_host(256) == 0x0A000101
    assert fr.ip_of_host(2 ** 24 - 3) == 0x0AFFFFFE
    assert len({fr.ip_of_host(h) for h in range(1000)}) == 1000
    for bad in (lambda: fr.mac_of_port(2 ** 32), lambda: fr.ip_of_host(2 ** 24 - 2), lambda: fr.ip_of_host(-1)):
        with pytest.raises(ValueError):
            bad()


# --- pcap -------------------------------------------------------------------------------

TIMES_PS = [0, 999, 1_000, 1_234_567, 999_999_999_999, 1_000_000_000_000, 3_600_000_000_123_456]


def test_pcap_round_trip(tmp_path):
    frames = [fr.build_frame(GOLDEN[k][0]) for k in GOLDEN]
    frames = [frames[i % len(frames)] for i in range(len(TIMES_PS))]
    path = tmp_path / "x.pcap"
    assert fr.write_pcap(path, zip(TIMES_PS, frames)) == len(frames)
    data = path.read_bytes()
    magic, major, minor, _, _, snap, link = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, link) == (0xA1B23C4D, 2, 4, 1) and snap >= 9216
    off, got = 24, []
    while off < len(data):
        sec, nsec, incl, orig = struct.unpack_from("<IIII", data, off)
        got.append((sec * 10 ** 9 + nsec, data[off + 16:off + 16 + incl]))
        assert incl == orig and nsec < 10 ** 9
        off += 16 + incl
    assert got == [(t // 1000, f) for t, f in zip(TIMES_PS, frames)]
    pkts = rdpcap(str(path))
    assert [int(p.time * 10 ** 9) for p in pkts] == [t // 1000 for t in TIMES_PS]
    assert [bytes(p) for p in pkts] == frames


def test_pcap_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.pcap"
    path.write_bytes(b"old")

    def frames():
        yield 0, fr.build_frame(GOLDEN["raw"][0])
        raise RuntimeError("engine died")

    with pytest.raises(RuntimeError):
        fr.write_pcap(path, frames())
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.pcap"]
    with pytest.raises(ValueError, match="time_ps=-1"):
        fr.write_pcap(path, [(-1, b"\0" * 60)])
    assert path.read_bytes() == b"old"


TSHARK_FIELDS = ["frame.protocols", "_ws.malformed", "_ws.expert", "vlan.priority", "ip.checksum.status",
                 "udp.checksum.status", "infiniband.bth.opcode",
                 "infiniband.bth.destqp", "infiniband.bth.psn", "infiniband.invariant.crc", "macc.opcode",
                 "macc.cbfc.enbv", "macc.cbfc.pause_time.c0", "macc.cbfc.pause_time.c3"]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decodes_every_frame(tmp_path):
    rows = [row for row, _ in CASES.values()] + [GOLDEN["nak"][0], GOLDEN["cnp"][0]]
    raws = [fr.build_frame(r) for r in rows]
    path = tmp_path / "all.pcap"
    fr.write_pcap(path, ((i * 1_000_000, raw) for i, raw in enumerate(raws)))
    checks = ["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]
    fields = sum((["-e", f] for f in TSHARK_FIELDS), [])
    out = subprocess.run(["tshark", "-n", *checks, "-r", str(path), "-T", "fields", *fields],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    lines = out.splitlines()
    assert len(lines) == len(rows)
    for row, raw, line in zip(rows, raws, lines):
        v = dict(zip(TSHARK_FIELDS, line.split("\t")))
        assert v["_ws.malformed"] == "" and v["_ws.expert"] == "", (row, line)
        kind = row["frame_kind"]
        if kind in ("roce", "cnp"):
            assert v["frame.protocols"].startswith("eth:ethertype:vlan:ethertype:ip:udp:infiniband")
            assert v["ip.checksum.status"] == v["udp.checksum.status"] == "1"   # Good
            assert int(v["infiniband.bth.opcode"]) == (0x81 if kind == "cnp" else row["opcode"])
            assert int(v["infiniband.bth.destqp"], 0) == row["dqpn"]
            assert int(v["infiniband.bth.psn"]) == row.get("psn", 0)
            if kind == "roce":   # tshark 4.0 shows a CNP's bytes after the BTH as vendor data
                assert int(v["infiniband.invariant.crc"], 16).to_bytes(4, "big") == icrc(raw[ETH_TAGGED:-ICRC])
        elif kind == "pfc":
            assert v["frame.protocols"] == "eth:ethertype:macc"
            assert int(v["macc.opcode"], 0) == 0x0101 and int(v["macc.cbfc.enbv"], 0) == row["pfc_vector"]
            assert (int(v["macc.cbfc.pause_time.c0"]), int(v["macc.cbfc.pause_time.c3"])) == (
                row["pfc_times"][0], row["pfc_times"][3])
        else:
            assert v["frame.protocols"] == "eth:ethertype:vlan:ethertype:data"
        if kind != "pfc":
            assert int(v["vlan.priority"]) == row.get("pcp", 0)
