"""Address plans: deterministic MAC and IPv4 addresses for simulated ports and hosts.

Port p gets the locally administered unicast MAC 02:00:pp:pp:pp:pp (IEEE 802 clause 8.2:
U/L bit set, I/G bit clear), p a 32-bit id. Host h gets 10.0.0.0/8 address 10.0.0.0 + h + 1
(RFC 1918), so host 0 is 10.0.0.1 and the network and broadcast addresses are never used.

QP endpoint q (the trace's `qp` column, the engine's QP index) is the RC QP number
QPN_BASE + q on the wire (BTH DestQP): QPs 0 and 1 are the management QPs (IBA 3.5.7: SMI
and GSI, whose payload Wireshark decodes as MADs), so no data QP may use them; 0x100 is
where a real HCA's first data QPs start as well. Load/Store over RoCEv2 uses its own
range from 0x100000 (ethlink.tracepcap.LS_QPN_BASE).

Limits: at most 2**32 ports and 2**24 - 2 hosts; one IPv4 address per host (no IPv6);
QP endpoints below 0x100000 - QPN_BASE keep their numbers apart from Load/Store's.
"""
from __future__ import annotations

__all__ = ["mac_of_port", "ip_of_host", "qpn_of_endpoint", "LOCAL_MAC_PREFIX", "HOST_NET", "QPN_BASE"]

LOCAL_MAC_PREFIX = 0x0200_0000_0000
HOST_NET = 0x0A00_0000       # 10.0.0.0/8
_HOST_MAX = (1 << 24) - 3    # 10.255.255.254 is the last host address
QPN_BASE = 0x100             # first data QP number; 0 and 1 are management QPs


def mac_of_port(port_id: int) -> int:
    """48-bit MAC of a simulated port: 02:00 followed by the 32-bit port id."""
    if not 0 <= port_id < 1 << 32:
        raise ValueError(f"port_id={port_id} is outside 0..2**32-1")
    return LOCAL_MAC_PREFIX | port_id


def ip_of_host(host_id: int) -> int:
    """IPv4 address (as an int) of a simulated host: 10.0.0.0 + host_id + 1."""
    if not 0 <= host_id <= _HOST_MAX:
        raise ValueError(f"host_id={host_id} is outside 0..{_HOST_MAX}")
    return HOST_NET + host_id + 1


def qpn_of_endpoint(qp: int) -> int:
    """24-bit RC QP number (BTH DestQP) of a simulated QP endpoint: QPN_BASE + qp."""
    if not 0 <= qp < (1 << 24) - QPN_BASE:
        raise ValueError(f"qp={qp} is outside 0..{(1 << 24) - QPN_BASE - 1}")
    return QPN_BASE + qp
