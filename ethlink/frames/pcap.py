"""pcap export: nanosecond-resolution capture files that Wireshark and tshark open.

Writes the classic libpcap format (not pcapng) with the nanosecond magic 0xa1b23c4d,
little-endian, LINKTYPE_ETHERNET (1), frames without FCS. Simulation time is integer
picoseconds; pcap keeps nanoseconds, so timestamps are rounded down to the nanosecond.
The file is written under a temporary name in the target directory and renamed into
place, so an interrupted write never leaves a truncated capture behind.

Limits: timestamps must be >= 0 and below 2**32 s; frames longer than the snap length
(262144 B, libpcap's maximum) are refused rather than truncated.
"""
from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["write_pcap", "PCAP_NSEC_MAGIC", "LINKTYPE_ETHERNET", "SNAPLEN"]

PCAP_NSEC_MAGIC = 0xA1B23C4D  # libpcap savefile.c: NSEC_TCPDUMP_MAGIC
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1         # tcpdump.org link-layer header types
SNAPLEN = 262144              # libpcap MAXIMUM_SNAPLEN
PS_PER_NS = 1000
NS_PER_S = 1_000_000_000

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


def write_pcap(path: str | os.PathLike[str], frames: Iterable[tuple[int, bytes]]) -> int:
    """Write `(time_ps, raw)` frames to a nanosecond pcap at `path`; returns the count."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_GLOBAL.pack(PCAP_NSEC_MAGIC, *PCAP_VERSION, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
            for time_ps, raw in frames:
                ns = int(time_ps) // PS_PER_NS
                sec, nsec = divmod(ns, NS_PER_S)
                if not 0 <= sec < 1 << 32:
                    raise ValueError(f"frame {n}: time_ps={time_ps} is outside the pcap time range")
                if len(raw) > SNAPLEN:
                    raise ValueError(f"frame {n}: {len(raw)} B exceeds the pcap snap length {SNAPLEN}")
                f.write(_RECORD.pack(sec, nsec, len(raw), len(raw)))
                f.write(raw)
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return n
