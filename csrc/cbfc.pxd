# Credit-based flow control per traffic class (Ultra Ethernet 1.0 CBFC; Broadcom SUE).
#
# What it models: a credit is one cell (Sim.cbfc_cell bytes) of the receiver's buffer. For
# each (link, priority) in cbfc_mask the sender may hold at most `cbfc_limit` cells in the
# receiver: it starts a frame only if cells used + the frame's cells <= cells the receiver
# reported freed + limit (counters are cumulative, as UEC's consumed/freed counters are).
# The receiver frees a frame's cells when the frame leaves its buffer (a switch: when it
# starts on its egress link; a host: when it is delivered) and, once cbfc_update_cells
# cells have been freed since its last update, sends a credit update: a 64 B control frame
# (ethlink/frames "cbfc": the cumulative freed count) ahead of data on the reverse link.
# No frame is ever sent without room for it, so there is nothing to drop and no pause.
#
# Limits: credits are per link and priority (no shared-credit pool); update frames are
# never lost; the limit must cover the credit loop (compile computes a default) or the
# link runs below line rate, which `stalled_ps` shows.
from core cimport *
from port cimport ctrl_push

cdef enum:
    CBFC_FRAME_BYTES = 64


cdef inline int64_t cbfc_cells(Sim* s, int32_t size) noexcept nogil:
    return (size + s.cbfc_cell - 1) // s.cbfc_cell


cdef inline void cbfc_freed(Sim* s, int32_t rx_port, int32_t prio, int32_t size) noexcept nogil:
    # The receiver freed a frame's cells; advertise them once enough have accumulated.
    cdef Queue* q = &s.queues[rx_port * NPRIO + prio]
    cdef Port* pt
    cdef int32_t pi
    cdef Packet* pk
    q.cbfc_rx_freed += cbfc_cells(s, size)
    if q.cbfc_rx_freed - q.cbfc_rx_sent < s.cbfc_update_cells:
        return
    q.cbfc_rx_sent = q.cbfc_rx_freed
    pi = pkt_alloc(s)
    if pi < 0:
        return
    pt = &s.ports[rx_port]
    pk = &s.pkts[pi]
    pk.kind = FK_CBFC
    pk.size = CBFC_FRAME_BYTES
    pk.flow = -1
    pk.src = pt.node
    pk.dst = pt.peer_node
    pk.prio = <uint8_t>prio
    pk.opcode = <uint8_t>prio           # the virtual channel
    pk.offset = q.cbfc_rx_freed         # cumulative cells freed
    ctrl_push(s, pt, pi)
    pt.cbfc_updates += 1
    s.cbfc_updates += 1
    trace_pkt(s, TE_CREDIT, pt.node, rx_port, pi, q.cbfc_rx_freed, DR_NONE)
    kick(s, rx_port)


cdef inline void cbfc_rx(Sim* s, int32_t port, int32_t pi) noexcept nogil:
    # A credit update reached the sender's port.
    cdef Packet* pk = &s.pkts[pi]
    cdef Queue* q = &s.queues[port * NPRIO + pk.prio]
    trace_pkt(s, TE_CREDIT, s.ports[port].node, port, pi, pk.offset, DR_NONE)
    if pk.offset > q.cbfc_freed:
        q.cbfc_freed = pk.offset
    if q.stall_start >= 0:
        q.stalled_ps += s.now - q.stall_start
        q.stall_start = -1
    pkt_free(s, pi)
    kick(s, port)
