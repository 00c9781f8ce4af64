"""ethlink.frames: the wire format of every frame the simulator moves.

One traced frame (a mapping of named fields, the trace's columns) becomes exact wire
bytes (`build_frame`), a scapy packet decoded from those bytes (`to_scapy`), and pcap
files Wireshark opens (`write_pcap`). Formats: priority-tagged raw test frames, RoCEv2
(IBA Annex A17) RC packets and CNPs (with HPCC's INT header when the run uses HPCC),
IEEE 802.1Qbb PFC, and ethlink's own EthLink v1 and CBFC credit frames. Field tables live in `fields`, scapy layers in `layers`.

Limits: see each module; in short IPv4 only, RC transport only, synthesised payload bytes.
"""
from .addresses import QPN_BASE, ip_of_host, mac_of_port, qpn_of_endpoint
from .build import Row, build_frame, decode, fcs, to_scapy
from .fields import (
    COLUMNS,
    ROCE_OPCODES,
    AethSyndrome,
    Ecn,
    ElFlags,
    ElOpcode,
    ElTxnFlags,
    EtherType,
    FrameKind,
    HeaderFormat,
    FieldSpec,
    RoceOpcode,
    el_data_len,
    ethlink_frame_bytes,
    roce_frame_bytes,
)
from .layers import (AETH, BTH, RETH, AtomicAckETH, AtomicETH, CNPPadding, ELBase, ELCredit, ELTxn, HpccInt,
                     HpccIntHop, ImmDt)
from .pcap import write_pcap

__all__ = [
    "build_frame", "to_scapy", "decode", "fcs", "write_pcap", "mac_of_port", "ip_of_host", "qpn_of_endpoint",
    "QPN_BASE", "Row",
    "COLUMNS", "ROCE_OPCODES", "HeaderFormat", "FieldSpec", "el_data_len", "ethlink_frame_bytes",
    "roce_frame_bytes", "FrameKind", "EtherType", "Ecn", "RoceOpcode", "AethSyndrome", "ElOpcode",
    "ElFlags", "ElTxnFlags", "BTH", "AETH", "CNPPadding", "RETH", "ImmDt", "AtomicETH", "AtomicAckETH",
    "ELBase", "ELTxn", "ELCredit", "HpccInt", "HpccIntHop",
]
