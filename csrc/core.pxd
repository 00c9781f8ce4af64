# ethlink engine core: the structs every csrc module shares, the event queue, the packet
# pool, the seeded random streams and the one trace point.
#
# What it models: a discrete-event simulation in integer picoseconds. One `Sim` struct
# owns time, the event queue and every table; nothing is module-level, so two engines can run
# side by side. Events are ordered by (time, insertion sequence): same-time events run
# first-in first-out, which makes runs reproducible to the byte.
#
# A frame's arrival at the far end of its link waits in that link's FIFO (link_push) until
# the link's earlier arrivals have happened: the event queue holds busy links and timers,
# not every frame in flight, and events still pop in (time, seq) order. The queue itself
# (evq.h) is a timing wheel a little longer than the longest link, in front of a 4-ary
# heap for the bucket being served and one for protocol timers beyond the wheel.
#
# Limits: the event queue and the packet pool (each packet holds its own link FIFO entry) grow by
# doubling; a run that holds more than 2**30 packets at once is refused. All structs are
# plain C, readable from Python as numpy structured arrays (engine.pyx exposes them).
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
cdef extern from "pool.h" nogil:
    void* ethlink_pool_alloc(size_t nbytes, size_t max_bytes, void** pool)
    void* ethlink_pool_grow(void* p, size_t old_bytes, size_t new_bytes, void* pool)
    void ethlink_pool_populate(void* pool, size_t upto)
    void ethlink_pool_free(void* p, size_t nbytes, void* pool)
    enum: ETHLINK_POOL_SMALL

# ---------------------------------------------------------------------------------------
# Constants (IEEE 802.3 clause 4.4.2: 7 B preamble + 1 B SFD before, 12 B IFG after).
cdef enum:
    PREAMBLE_BYTES = 8          # preamble + start-of-frame delimiter
    IFG_BYTES = 12              # minimum inter-frame gap
    WIRE_EXTRA_BYTES = 20       # PREAMBLE_BYTES + IFG_BYTES: wire time beyond the frame
    MIN_FRAME_BYTES = 64        # IEEE 802.3 minimum frame, FCS included
    NPRIO = 8                   # IEEE 802.1Q priorities (PCP 0..7)
    NO_PKT = -1
    EGRESS_TO_QP = -2           # Packet.egress on the link to a host: -2 - qp (tx_start)

cdef enum EventKind:
    EV_TX_DONE = 0              # a port finished a frame and its IFG: it may start the next
    EV_RX = 1                   # a frame is received at a node (last bit, or header if cut-through)
    EV_FLOW_START = 2           # a flow (or QP message stream) becomes active at its source
    EV_KICK = 3                 # a port should try to start transmitting (used by protocols)
    EV_TIMER = 4                # a protocol timer; `obj` names the owner, `arg` the timer kind
    EV_PAUSE_END = 5            # a paused queue's pause may have expired; obj = queue index
    EV_PFC_REFRESH = 6          # re-send XOFF before it expires; obj = queue, arg = generation
    EV_WATCHDOG = 7             # PFC watchdog check of a paused queue; obj = queue index
    EV_DEADLOCK_CHECK = 8       # periodic check that paused fabric still moves data
    EV_QP_TIMER = 9             # a queue-pair timer: obj = QP, arg = kind | generation << 8
    EV_LS = 10                  # Load/Store engine: obj = GPU or op, arg = LsEvent | gen << 8
    EV_LLR_NACK = 11            # an LLR NACK reaches the sender port obj
    EV_LINK_RX = 12             # as EV_RX, for the head of a link's arrival FIFO (see link_push)

cdef enum QpTimer:              # EV_QP_TIMER kinds (low 8 bits of arg)
    QT_WAKE = 0                 # rate limiter allows the next frame
    QT_RTO = 1                  # retransmission timeout
    QT_ALPHA = 2                # DCQCN alpha update timer
    QT_INCREASE = 3             # DCQCN rate increase timer

cdef enum LsEvent:              # EV_LS kinds (low 8 bits of arg)
    LE_ISSUE = 0                # GPU obj may issue its next operation (issue time reached)
    LE_FLUSH = 1                # GPU obj's open coalescing frame reached its wait limit
    LE_RESPOND = 2              # target answers the transactions of the frame whose first op is obj
    LE_TIMEOUT = 3              # op obj's request may be lost: send it again

cdef enum LsKind:               # what a Load/Store operation is
    LS_LOAD = 0
    LS_STORE = 1                # posted: no completion message
    LS_STORE_ACK = 2            # store with a completion (STORE_ACK)
    LS_FADD = 3                 # 8 B fetch-and-add
    LS_CAS = 4                  # 8 B compare-and-swap
    LS_FENCE = 5                # no frame: waits until every earlier op of the GPU completed

cdef enum Transport:
    TR_RAW = 0                  # raw Ethernet: no header beyond 802.1Q, no ACK
    TR_ROCE = 1                 # RoCEv2 reliable connection (IBA Annex A17)
    TR_UET = 2                  # Ultra Ethernet transport, PDS RUD (csrc/uet.pxd)

cdef enum Verb:                 # what a message (Flow) is
    VERB_RAW = 0
    VERB_WRITE = 1
    VERB_SEND = 2
    VERB_READ = 3
    VERB_WRITE_IMM = 4
    VERB_SEND_IMM = 5

cdef enum NodeKind:
    NODE_HOST = 0
    NODE_SWITCH = 1

cdef enum FrameKind:            # every frame kind has a real wire format (ethlink.frames)
    FK_RAW = 0                  # Ether/802.1Q/0x88B6 raw data
    FK_ROCE = 1                 # RoCEv2 data or request (BTH + ext headers)
    FK_ROCE_ACK = 2             # RoCEv2 ACK/NAK (BTH + AETH)
    FK_CNP = 3                  # RoCEv2 congestion notification packet (BTH opcode 0x81)
    FK_PFC = 4                  # IEEE 802.1Qbb pause frame
    FK_ETHLINK = 5              # ethlink v1 Load/Store frame
    FK_CBFC = 6                 # ethlink v1 credit update
    FK_UET = 7                  # UET data: UDP 4793, PDS RUD request + SES standard header
    FK_UET_CTRL = 8             # UET PDS control: ACK_CC (with SACK bitmap) or NACK

cdef enum TraceEvent:           # names in ethlink/trace.py EVENT_NAMES, same order
    TE_ENQUEUE = 0              # packet entered an egress queue (qbytes after)
    TE_TX_START = 1             # first bit on the wire
    TE_RX = 2                   # packet received by a node
    TE_DROP = 3                 # packet dropped; `reason` says why
    TE_MARK = 4                 # ECN CE set on enqueue
    TE_DELIVER = 5              # packet handed to the destination endpoint
    TE_PAUSE_TX = 6
    TE_PAUSE_RX = 7
    TE_CREDIT = 8
    TE_LLR_REPLAY = 9
    TE_OP_ISSUE = 10
    TE_OP_COMPLETE = 11
    TE_TXN = 12                 # a Load/Store transaction joined frame `pkt` (one row each)
    TE_TRIM = 13                # a UET data frame failed admission and was cut to its headers

cdef enum DropReason:           # names in ethlink/trace.py DROP_REASONS, same order
    DR_NONE = 0
    DR_BUFFER_FULL = 1          # shared buffer has no room
    DR_QUEUE_LIMIT = 2          # per-queue static limit or dynamic threshold exceeded
    DR_NO_ROUTE = 3             # no next hop towards the destination
    DR_FCS = 4                  # frame corrupted on the wire (bit error), FCS check failed
    DR_WATCHDOG = 5             # PFC watchdog dropped a stormed queue
    DR_TTL = 6                  # hop limit exceeded (routing loop)
    DR_HEADROOM = 7             # lossless frame beyond XOFF + headroom: the pause came too late

cdef enum PacketFlag:
    PF_LAST = 1                 # last packet of its flow or message
    PF_ROUTED = 2               # routed at this node, waiting for its last bit (cut-through fallback)
    PF_LS = 4                   # a Load/Store frame (any header profile): the LS engine's
    PF_RESPONSE = 8             # a Load/Store response (completions for the issuer)
    PF_CORRUPT = 16             # bits flipped on the wire: the receiver's FCS check fails
    PF_TXN_ACK = 32             # trace txn rows only: a store that wants a completion
    PF_INT = 64                 # carries an HPCC INT header (csrc/hpcc.pxd): Sim.hp_int[packet]
    PF_TRIM = 128               # UET: a data frame trimmed to its headers by a switch

cdef enum StopReason:           # why the loop returned to Python
    STOP_EMPTY = 0              # no event left
    STOP_UNTIL = 1              # next event is after the horizon
    STOP_CHUNK = 2              # event budget of this call used (progress reporting)
    STOP_TRACE = 3              # trace ring nearly full: drain it and call again
    STOP_ERROR = 4              # out of memory or pool limit; Sim.error says which
    STOP_DEADLOCK = 5           # PFC deadlock detected: frames queued, nothing moves

cdef enum:
    TRACE_MARGIN = 64           # records one event usually writes at most, besides Load/Store
                                # transactions (Sim.trace_margin adds four per transaction);
                                # the ring grows if an event writes more
    CT_HEADER_BYTES = 64        # bytes a cut-through switch reads before forwarding

cdef enum Sched:
    SCHED_STRICT = 0            # highest priority number first (7 highest)
    SCHED_DWRR = 1              # deficit weighted round robin, quantum bytes per weight

cdef enum Threshold:
    THR_STATIC = 0              # queue limited to a fixed number of bytes
    THR_DYNAMIC = 1             # queue limited to alpha x free shared buffer (Choudhury-Hahne)

cdef enum EcmpMode:
    ECMP_FLOW = 0               # seeded hash of the flow: a flow keeps one path
    ECMP_SPRAY = 1              # seeded hash of the packet: every packet picks again

cdef enum:
    TRACE_OFF = 0
    TRACE_ENDPOINTS = 1         # only events at hosts
    TRACE_HOP = 2               # every event at every node

# ---------------------------------------------------------------------------------------
# Structs. Every field: unit and invariant.

cdef extern from "heap.h" nogil:
    # An event, and the 4-ary heap on (time, seq) that evq.h builds on.
    ctypedef struct Event:
        int64_t time            # ps; events pop in (time, seq) order
        int64_t seq             # insertion sequence number, unique, increasing
        int32_t kind            # EventKind
        int32_t obj             # port, packet, flow or timer-owner index (by kind)
        int64_t arg             # packet index for EV_RX, timer kind for EV_TIMER

cdef extern from "evq.h" nogil:
    # The event queue: a timing wheel in front of two small heaps (see evq.h).
    ctypedef struct EvQueue:
        int64_t n               # events pending
        int64_t cap_hwm         # most events pending at once
        int64_t cur_cap
        int64_t far_cap
        int shift
        int64_t nslots
        int rank                # 1: small buckets rank-sorted (AVX2), 0: quicksorted
    int evq_rank_supported()
    int evq_init(EvQueue* q, int shift, int64_t nslots)
    void evq_free(EvQueue* q)
    int evq_push(EvQueue* q, const Event* ev)
    int evq_push5(EvQueue* q, int64_t time, int64_t seq, int32_t kind, int32_t obj, int64_t arg)
    Event* evq_top(EvQueue* q, int* err)
    void evq_pop(EvQueue* q, Event* out)
    const Event* evq_ahead(const EvQueue* q, int64_t k)

cdef struct Packet:             # 128 B, 64-byte aligned (pkt_alloc): two cache lines
    # NOTE: the first line holds what a hop touches (link FIFO, routing, queueing, the
    # port's pick): on large fabrics hundreds of thousands of packets sit in deep queues,
    # and a hop then costs a cache miss per line it reads. The second line is the
    # transport's and the trace's.
    int32_t next                # next packet in the same queue, or free-list link; -1 ends
    int32_t flow                # flow index, -1 for control frames
    int32_t src                 # source host index
    int32_t dst                 # destination host index (hop-by-hop frames: the peer node)
    int32_t size                # frame bytes, FCS included, preamble/IFG excluded; >= 64
    int32_t in_port             # port it arrived on at the node holding it; -1 at its source
    int32_t egress              # egress port chosen at the node holding it, -1 before routing;
                                # on the link to a host, EGRESS_TO_QP - the QP its arrival
                                # reads (a transport frame), else -1
    int32_t rx_next             # link FIFO (link_push): next arrival on the same link, -1 ends
    int64_t t_last              # ps when its last bit reaches the node holding it
    int64_t rx_time             # link FIFO: ps of the EV_LINK_RX event rx_next becomes
    int64_t rx_seq              # link FIFO: the sequence number rx_next was given when sent
    uint8_t prio                # 802.1Q priority 0..7
    uint8_t kind                # FrameKind
    uint8_t ecn                 # IP ECN bits, RFC 3168: 0 Not-ECT, 1 ECT(1), 2 ECT(0), 3 CE
    uint8_t opcode              # BTH opcode / ethlink opcode; 0 for raw
    uint8_t hops                # links crossed so far (loop guard)
    uint8_t flags               # PacketFlag bits
    uint8_t syndrome            # AETH syndrome (ACK/NAK), 0 otherwise
    uint8_t pad0
    # --- second cache line
    int64_t uid                 # unique, increasing in creation order; the trace's packet id
    int64_t t_created           # ps, when the source made it
    int64_t offset              # payload byte offset within its flow/message
    int32_t payload             # payload bytes carried (0 for control frames)
    int32_t psn                 # transport sequence number (RoCE PSN, ethlink tag)
    int32_t qp                  # QP endpoint the frame is addressed to (its DestQP), -1 none
    int32_t llr_seq             # LLR frame sequence number on the link it is crossing
    int32_t ntx                 # Load/Store transactions it carries (coalesced), 0 otherwise
    int32_t pad1[5]             # to 128 B

cdef struct Node:
    int32_t kind                # NodeKind
    int32_t first_port          # its ports are first_port .. first_port + nports - 1
    int32_t nports
    int32_t host                # host index for hosts, -1 for switches
    int64_t latency_ps          # switch pipeline / NIC receive latency, added on receive
    int64_t buffer_bytes        # shared buffer size (switch); 0 for hosts (unbounded NIC queues)
    int64_t buffer_used         # bytes queued in the shared buffer now
    int64_t buffer_hwm          # high-water mark of buffer_used
    int32_t threshold           # Threshold
    int32_t cut_through         # 1: forward after the header arrives (if egress rate <= ingress)
    double alpha                # dynamic threshold factor (THR_DYNAMIC)
    int64_t queue_limit         # per-queue byte limit (THR_STATIC)
    int32_t ecmp                # EcmpMode at this node
    int32_t pad0
    # Buffer pools (switches; csrc/pfc.pxd): buffer_bytes = shared_bytes + hdrm_pool
    int64_t shared_bytes        # shared pool: every admitted frame but lossless headroom
    int64_t shared_used         # bytes in the shared pool now (<= shared_bytes)
    int64_t hdrm_pool           # headroom pool for the lossless priority groups, bytes
    int64_t hdrm_used           # bytes in the headroom pool now (<= hdrm_pool)
    int64_t hdrm_hwm            # high-water mark of hdrm_used

cdef struct Port:               # 256 B, 64-byte aligned (engine.pyx)
    # NOTE: the first line holds what sending a frame touches, the second what receiving
    # one touches and the rest of a frame start (its node, counters, delay and peer): a hop
    # reads both lines of the sending port and the second of the receiving one.
    int32_t llr                 # 1: link-level retry on the link from this port
    int32_t peer                # port at the other end of the link
    int32_t busy                # 1 while a frame (or its IFG) occupies the wire and its
                                # EV_TX_DONE is queued; 2: the same, the event elided
                                # (port_busy); 0 idle
    int32_t kicked              # 1 while an EV_KICK is pending (no duplicates)
    int32_t ctrl_head           # control frames (PFC, credits) sent before any data queue
    int32_t replay_go           # LLR sender side: 1 while going back N: no new frame until done
    int32_t qmask               # bit p set: data queue p of this port holds a frame (port.pxd)
    int32_t sched               # Sched
    # An elided EV_TX_DONE (busy == 2, port_busy): when the frame's IFG ends, and the
    # sequence number the event would have had (on this line: a frame queued to an idle
    # port reads them)
    int64_t tx_end
    int64_t tx_seq
    int64_t tx_bytes            # frame bytes sent (FCS included, preamble/IFG excluded)
    int64_t busy_ps             # ps the wire was occupied (frames + preamble + IFG)
    # --- second cache line
    # Arrivals at this port (link_push): only the earliest is a queued event; the later
    # ones wait in a FIFO through Packet.rx_next behind it, data frames and link-local
    # control frames apart
    int32_t rx_tail             # data FIFO: latest arrival still to happen, -1 none
    int32_t crx_tail            # control-frame FIFO (PFC, credits: no pipeline latency)
    int32_t node                # owning node
    int32_t ctrl_tail
    int64_t tx_frames
    int64_t rx_bytes
    int64_t rx_frames
    int64_t delay_ps            # propagation delay to the peer, ps, >= 0
    int64_t ps_per_byte         # 8e12 / rate_bps when that is whole (every standard rate), else
                                # 0; derived by the engine (port_ser_ps)
    int32_t peer_node           # the peer port's node, derived by the engine: a frame start
                                # reads no line of the receiving port
    int32_t pad2
    # --- the rest
    int64_t rate_bps            # link rate, bit/s, > 0 (a frame's time: ps_per_byte)
    double ber                  # bit error rate of the link from this port (0: none)
    uint64_t rng                # this port's random stream (ECN marking), seeded per port
    int64_t pause_tx            # PFC frames sent from this port (XOFF and XON)
    int64_t pause_rx            # PFC frames received on this port
    int32_t dwrr_next           # DWRR: next priority to visit
    int32_t llr_seq             # next LLR sequence number to send
    int32_t llr_expect          # receiver side: next sequence number accepted
    int32_t llr_nacked          # receiver side: 1 after a NACK until a frame is accepted
    int32_t replay_head         # sender side: frames to send again, in sequence order
    int32_t replay_tail
    int32_t replay_next         # sender side: next sequence number to send again
    int32_t replay_until        # sender side: first sequence number never sent (end of go-back)
    int64_t llr_replays         # frames sent again from this port
    int64_t fcs_errors          # corrupted frames received on this port
    int64_t cbfc_updates        # credit update frames sent from this port
    int64_t pad1[4]             # to 256 B: four cache lines

cdef struct Queue:              # queues[port * 8 + prio]; 320 B, 64-byte aligned (engine.pyx)
    # NOTE: fields in the order the hot path touches them: a frame's enqueue, the port's
    # pick and dequeue read and write only the first cache line (ECN marking and the PFC
    # ingress side the second); the large fabrics' queues do not fit in cache.
    int32_t head                # first packet index, -1 empty
    int32_t tail                # last packet index, -1 empty
    int32_t pkts                # frames queued (< 2**30: the pool's limit)
    int32_t weight              # DWRR weight (quantum = weight x sched quantum bytes)
    int64_t bytes               # frame bytes queued
    int64_t hwm                 # high-water mark of bytes
    int64_t enq_pkts            # packets admitted
    int64_t paused_until        # PFC, egress side: ps; the queue starts no frame before this
    int64_t wd_until            # watchdog: pauses ignored / arrivals dropped until this ps
    int64_t kmax                # ECN: bytes; always mark above; 0 disables marking
    # --- second cache line
    int64_t kmin                # ECN: bytes; no mark below
    double pmax                 # ECN: mark probability at kmax
    # PFC, ingress side: bytes in the switch that arrived on this port at this priority
    int64_t ing_bytes
    int64_t xoff                # static XOFF threshold, bytes (0: dynamic, alpha x free)
    int64_t xon_offset          # XON when ing_bytes <= XOFF - xon_offset
    int64_t headroom            # this priority group's headroom: bytes it may hold in the
                                # headroom pool (what arrives after XOFF) before a lossless drop
    int64_t hdrm_bytes          # of ing_bytes, those charged to the headroom pool
    int32_t pause_sent          # 1 while an XOFF sent upstream is in force
    int32_t pause_gen           # generation of the refresh chain (stale timers ignore)
    # --- the rest
    int64_t pause_level         # ing_bytes when the XOFF in force was sent
    int64_t pauses_sent         # XOFF frames sent for this port-priority (refreshes included)
    int64_t hdrm_hwm            # high-water mark of hdrm_bytes
    int64_t drops               # packets dropped at admission to this queue
    int64_t drop_bytes
    int64_t marks               # ECN CE marks set on enqueue
    int32_t deficit             # DWRR deficit, bytes
    int32_t pad0
    # PFC, egress side: this queue obeys pauses received on its port (paused_until above)
    int64_t pause_start         # ps the current pause began, -1 when not paused
    int64_t paused_ps           # total ps paused (closed intervals)
    int64_t pause_since         # watchdog: start of the current uninterrupted pause, -1
    int64_t storms              # watchdog: storms declared on this queue
    int64_t dl_head             # deadlock check: uid of the head frame at the last check
                                # while this queue was blocked, -1 otherwise
    # CBFC (credit-based flow control), sender side on the egress queue, receiver side on
    # the ingress queue of the same (port, priority); credits in cells of Sim.cbfc_cell bytes
    int64_t cbfc_limit          # cells the receiver lets this sender hold; 0: no CBFC
    int64_t cbfc_used           # sender: cells sent so far (cumulative)
    int64_t cbfc_freed          # sender: cells the receiver reported freed (cumulative)
    int64_t cbfc_rx_freed       # receiver: cells freed so far (cumulative)
    int64_t cbfc_rx_sent        # receiver: freed count last advertised
    int64_t stall_start         # sender: when the head frame last found no credit, -1
    int64_t stalled_ps          # sender: total time blocked by credits
    int64_t pad1[5]             # to 320 B: five cache lines

cdef struct Flow:               # one message (a raw flow, or an RDMA verb posted on a QP)
    int32_t src                 # source host index (the requester)
    int32_t dst                 # destination host index
    int64_t size                # payload bytes
    int64_t start_ps            # when it is posted
    int64_t sent                # payload bytes put in frames so far (first transmissions)
    int64_t delivered           # payload bytes accepted in order by the data's receiver
    int64_t first_tx_ps         # first bit of its first frame; -1 before
    int64_t finish_ps           # last payload byte delivered; -1 before
    int64_t complete_ps         # completion (CQE) at the requester: last byte acked; -1 before
    int32_t prio
    int32_t mtu                 # payload bytes per full frame
    int32_t qp                  # QP endpoint (requester side) it is posted on
    int32_t next                # next message on the same QP, -1 ends
    int32_t packets             # frames of this message sent, retransmissions included
    int32_t verb                # Verb
    int32_t psn_start           # PSN of its first packet (assigned at post)
    int32_t npkts               # packets (PSNs) it spans
    int32_t retx                # packets retransmitted
    int32_t deps_left           # unfinished operations it waits for; posted when it reaches 0

cdef struct LsOp:               # one Load/Store operation issued by a GPU
    int32_t src                 # issuing GPU (host index)
    int32_t dst                 # target GPU
    int32_t kind                # LsKind
    int32_t size                # bytes of data it moves (1..max; 8 for atomics)
    int64_t addr                # remote address
    int64_t issue_ps            # when the GPU wants to issue it; the op waits for a tag
    int64_t start_ps            # issued: a tag was taken and the request built; -1 before
    int64_t complete_ps         # completion seen by the issuer (posted store: data at target)
    int32_t tag                 # tag it holds while outstanding
    int32_t next                # next op of the same GPU in issue order, -1 ends
    int32_t chain               # next op carried in the same frame, -1 ends
    int32_t retries             # requests sent again after a timeout
    int32_t gen                 # timeout generation
    int32_t port                # NIC port its requests use

cdef struct LsGpu:              # one GPU's Load/Store engine
    int32_t tags                # tags (outstanding transactions) it has
    int32_t outstanding         # tags in use
    int32_t pend                # next op to issue, -1 none
    int32_t issue_gen           # generation of the pending LE_ISSUE event
    int32_t open_pi             # request/response frame being coalesced, -1 none
    int32_t open_dst            # its destination GPU
    int32_t open_gen            # generation of its LE_FLUSH event
    int32_t spray               # round-robin counter over its ports (relaxed ordering)
    int32_t open_tail           # last op chained in the open frame
    int32_t open_port           # NIC port of the open frame
    int32_t next_tag            # tag numbers handed out round robin
    int32_t posted              # posted stores sent but not yet at their target (fences wait)
    int64_t tag_ps              # integral of outstanding over time (tag occupancy)
    int64_t tag_since           # time of the last change of outstanding
    int64_t ops_done

cdef struct Qp:                 # a queue-pair endpoint; raw flows get a send-only one each
    int32_t host                # owning host index
    int32_t peer                # the other endpoint (RoCE), -1 for raw
    int32_t transport           # Transport
    int32_t prio                # priority of its data frames
    int32_t port                # NIC port it sends on, -1 before its first message
    int32_t next                # next QP in the same port ring, -1 ends
    int32_t in_ring             # 1 while in a port ring
    int32_t mtu                 # payload bytes per full frame (path MTU)
    # send side (requester; for READ the responder streams responses from here)
    int32_t msg_head            # oldest message not completed, -1 none
    int32_t msg_tail            # newest message, -1 none
    int32_t msg_cur             # message holding snd_nxt, -1 none
    int32_t snd_nxt             # next PSN to send
    int32_t snd_una             # oldest unacknowledged PSN
    int32_t snd_max             # highest PSN sent + 1 (below it a send is a retransmission)
    int32_t psn_end             # PSN after the last posted message
    int32_t rto_gen             # generation of the pending QT_RTO event; others are stale
    int64_t rto_ps              # current timeout (doubles on consecutive expiries, back to the initial value on progress)
    int64_t rto_deadline        # the running timer expires at this ps (valid while rto_armed)
    int64_t rto_event_ps        # time of the pending QT_RTO event (valid while rto_pending)
    int64_t next_tx_ps          # rate limiter: earliest start of the next frame
    int64_t last_tx_ps          # rate limiter: when the last frame was released
    int64_t last_tx_bytes       # its wire bytes (frame + preamble + IFG)
    int32_t wake_pending        # 1 while a QT_WAKE is scheduled
    int32_t rto_armed           # 1 while the retransmission timer runs (until rto_deadline)
    # READ responder: responses streamed from this endpoint
    int32_t rsp_flow            # message being answered, -1 none
    int32_t rsp_nxt             # next response PSN
    int32_t rsp_end             # PSN after the last response
    int32_t rsp_max             # highest response PSN sent + 1 (below: a retransmission)
    int32_t rto_pending         # 1 while a QT_RTO event of generation rto_gen is queued
    int32_t retries             # consecutive timeouts without progress
    # DCQCN reaction point (Zhu et al. 2015, section 3.2)
    int64_t line_bps            # rate of its NIC port
    int64_t rate_bps            # current rate RC
    int64_t target_bps          # target rate RT
    double alpha
    int64_t bytes_since         # bytes sent since the last byte-counter event
    int32_t t_count             # rate-increase timer events since the last cut
    int32_t b_count             # byte-counter events since the last cut
    int32_t cc_gen              # generation of DCQCN timers
    int32_t cnp_seen            # a CNP arrived during the current alpha period
    # receive side (responder)
    int32_t epsn                # expected PSN
    int32_t msn                 # messages completed (AETH MSN)
    int32_t unacked             # in-order packets since the last ACK
    int32_t nak_sent            # 1 after a NAK, until the expected PSN arrives
    int64_t last_cnp_ps         # notification point: last CNP sent, -inf initially
    # counters
    int64_t retx_pkts
    int64_t timeouts
    int64_t cnps_rx
    int64_t cnps_tx
    int64_t naks_rx
    int64_t acks_rx
    int64_t spurious            # data frames (or READ responses) that reached this endpoint
                                # as copies of a PSN it had already accepted
    # HPCC (csrc/hpcc.pxd): the sender's window; its pacing rate is rate_bps = W / T
    int64_t hp_w                # window W, payload bytes in flight allowed
    int64_t hp_wc               # reference window Wc, bytes (updated once per RTT)
    int64_t hp_w_min            # smallest W it had, bytes
    int64_t hp_updates          # ACKs whose INT updated W
    double hp_u                 # normalized inflight U of the most loaded hop (EWMA)
    int32_t hp_stage            # additive-increase stages since the last multiplicative step
    int32_t hp_last_psn         # snd_nxt at the last per-RTT update (Algorithm 1 lastUpdateSeq)
    int32_t hp_ready            # 1 once an ACK's INT records were stored as the reference
    int32_t hp_pad
    # UET (csrc/uet.pxd)
    int64_t uet_base            # this endpoint's first slot in Sim.uet_st / uet_sent_ps
                                # (one per PSN it can send or receive: psn_end at most)
    int64_t uet_cap             # slots it owns (PSNs of every message on the QP)
    int64_t uet_inflight        # sender: PSNs sent and neither acknowledged nor NACKed
    int64_t uet_cwnd            # sender: congestion window, bytes (NSCC or uet.window)
    int32_t uet_rtx_n           # sender: PSNs marked for selective retransmission
    int32_t uet_rtx_scan        # sender: no PSN below this is marked for retransmission
    int64_t uet_nacks_rx        # sender: NACKs received (trimmed packets)
    int64_t uet_sacks_rx        # sender: ACKs whose SACK bitmap acknowledged PSNs beyond CACK
    # NSCC sender state (csrc/nscc.pxd; htsim UecSrc's names in brackets)
    int64_t nscc_base_rtt       # ps, lowest RTT seen (initially Sim.nscc_rtt_ps) [_base_rtt]
    int64_t nscc_maxwnd         # bytes, 1.5 x base RTT x line rate [_maxwnd]
    double nscc_avg_delay       # ps, EWMA of the queueing delay (RTT - base RTT) [_avg_delay]
    double nscc_inc             # bytes^2, increase accumulated until the next adjustment [_inc_bytes]
    int64_t nscc_achieved       # bytes acknowledged since the quick-adapt period began [_achieved_bytes]
    int64_t nscc_received       # bytes acknowledged since the last adjustment [_received_bytes]
    int64_t nscc_to_ignore      # bytes in flight at the last quick adapt [_bytes_to_ignore]
    int64_t nscc_ignored        # bytes acknowledged since then [_bytes_ignored]
    int64_t nscc_fi_count       # bytes acknowledged at near-zero delay (fast increase) [_fi_count]
    int64_t nscc_qa_end         # ps, end of the current quick-adapt period, 0 before the first [_qa_endtime]
    int64_t nscc_last_dec       # ps of the last multiplicative decrease [_last_dec_time]
    int64_t nscc_last_adjust    # ps of the last window adjustment [_last_adjust_time]
    int64_t nscc_last_eta       # ps of the last additive eta step [_last_eta_time]
    int32_t nscc_increase       # 1 while in fast increase [_increase]
    int32_t nscc_trigger_qa     # 1 after a NACK: the next period end runs quick adapt [_trigger_qa]
    int64_t nscc_cwnd_min       # lowest window it had, bytes
    int64_t nscc_qas            # quick adapts
    int64_t nscc_mds            # multiplicative decreases

cdef struct TraceRec:           # one row of the trace; ethlink/trace.py mirrors it
    int64_t time_ps
    int64_t pkt                 # packet uid, -1 when the event has no packet
    int64_t qbytes              # bytes in the queue (or buffer) after the event
    int64_t addr                # flow byte offset / RETH VA / ethlink address
    int32_t node
    int32_t port                # -1 when not at a port
    int32_t flow
    int32_t src                 # source host
    int32_t dst                 # destination host
    int32_t size                # frame bytes (FCS included)
    int32_t payload
    int32_t psn                 # PSN (RoCE), pause quanta (PFC), frame number (raw)
    int32_t qp                  # destination QP endpoint (RoCE: BTH DestQP), -1 none
    int32_t ntx                 # Load/Store transactions in the frame (ethlink), 0 otherwise
    uint8_t event               # TraceEvent
    uint8_t kind                # FrameKind
    uint8_t prio
    uint8_t ecn
    uint8_t reason              # DropReason
    uint8_t opcode              # BTH opcode; PFC class-enable vector
    uint8_t flags
    uint8_t syndrome            # AETH syndrome of ACK/NAK frames

cdef enum:
    INT_MAX_HOPS = 5            # INT records a packet carries at most (HPCC's ns-3: IntHeader::maxHop)

cdef struct IntRec:             # one switch egress's INT record (HPCC, csrc/hpcc.pxd)
    int64_t ts_ps               # when the frame started on the egress link, ps
    int64_t tx_bytes            # frame bytes the egress port had sent, this frame included
    int64_t qlen                # bytes left in the frame's egress queue (its priority) after it
    int64_t rate_bps            # egress link rate, bit/s

cdef struct IntStack:           # the INT records of one packet (or one QP's last ACK)
    int64_t n                   # records 0..n-1 valid, n <= INT_MAX_HOPS
    IntRec hop[5]               # INT_MAX_HOPS

cdef struct Sim:
    int64_t now                 # ps; read-only outside the loop
    int64_t seq                 # next event sequence number
    int64_t events              # events processed (elided EV_TX_DONEs included)
    int64_t cur_seq             # seq of the event being processed
    int64_t next_uid            # next packet uid
    uint64_t seed
    EvQueue evq                 # pending events (evq.h)
    # packet pool
    Packet* pkts
    int32_t pkt_cap
    int32_t free_head           # free list of packets, -1 when empty (then pkt_top)
    int32_t pkt_top             # packets [pkt_top, pkt_cap) were never used: taken in order
    int64_t pkts_live           # packets allocated and not freed
    int64_t pkts_live_hwm
    void* pool                  # the pool's reservation and page helper (pool.h), or NULL
    int64_t pool_next           # record offset (bytes) at which pkt_alloc asks the helper for more
    # tables (owned by engine.pyx as numpy arrays)
    Node* nodes
    int32_t n_nodes
    Port* ports
    int32_t n_ports
    Queue* queues
    Flow* flows
    int32_t n_flows
    Qp* qps
    int32_t n_qps
    int32_t n_hosts
    int32_t* host_node          # host index -> node index
    int32_t* node_row           # node -> row of route_set, -1 for a host with one port (route.pxd)
    int32_t* host_class         # host -> destination class (hosts linked to the same switches)
    int32_t* host_down          # [2 host]: the node a host with one port is linked to, [2 host
                                # + 1]: that node's port to it; -1 for hosts with several ports
    int32_t n_classes
    int32_t* route_set          # [row * n_classes + class] -> next-hop set, -1: none
    int16_t* route_set16        # the same as int16 when there are fewer than 32767 sets (then
                                # route_set is NULL): half the table in cache (route.pxd)
    int32_t* route_off          # [set] .. [set + 1]: the set's range of route_port
    int32_t* route_port         # egress port candidates (equal cost, ascending)
    int32_t* ring_head          # [port * 8 + prio] QPs with something to send on a port
    int32_t* ring_tail
    uint8_t* ring_mask          # [port] bit p: ring port * 8 + p is not empty
    int32_t* flow_order         # flows without dependencies, sorted by start time
    int32_t n_ordered
    int32_t* dep_off            # [f]..[f+1]: range of dep_list holding f's dependents
    int32_t* dep_list
    int32_t next_flow_start     # index into flow_order of the next flow to schedule
    int64_t dwrr_quantum        # bytes per unit of weight
    int32_t ttl                 # hop limit
    # accounting
    int64_t bytes_sent          # payload bytes put on the wire by sources
    int64_t bytes_delivered     # payload bytes delivered to destinations
    int64_t pkts_sent           # data packets created by sources
    int64_t pkts_delivered
    int64_t pkts_dropped
    int64_t pkts_discarded      # frames a transport receiver discarded (out of order, duplicate)
    int64_t bytes_dropped       # payload bytes of dropped packets
    int64_t drops[8]            # by DropReason
    int64_t flows_done
    int64_t hops                # frames that crossed a link
    int64_t data_tx             # data frames started on any link
    int64_t ecn_marked
    # PFC (IEEE 802.1Qbb), fabric-wide settings
    int32_t lossless_mask       # bit p set: priority p is lossless (PFC), else lossy
    int32_t llr_any             # 1: some port runs link-level retry (llr.pxd)
    int32_t ber_any             # 1: some link has bit errors (Port.ber > 0)
    double pfc_alpha            # dynamic XOFF = pfc_alpha x free buffer (when Queue.xoff == 0)
    int32_t pfc_quanta          # pause time sent in XOFF, in quanta of 512 bit times
    int32_t wd_action           # 0 off, 1 drop, 2 ignore pauses
    int64_t pfc_response_ps     # from a pause frame's last bit to the pause taking effect
    int64_t wd_detect_ps        # watchdog detection time
    int64_t wd_restore_ps       # watchdog restoration time
    int64_t deadlock_check_ps   # period of the deadlock check; 0 disables
    int64_t deadlock_ps         # when a deadlock was detected, -1 if none
    int64_t t_active            # time of the last frame event or flow start (not timers)
    int64_t storms
    # RoCE RC transport
    int32_t ack_every           # ACK after this many in-order packets (and at message end)
    int32_t ack_prio            # priority of ACK/NAK frames, -1: the data's priority
    int32_t cnp_prio            # priority of CNP frames
    int32_t ecn_capable         # 1: RoCE data frames leave as ECT(0)
    int64_t rto_initial_ps      # first retransmission timeout; 0: never time out (IBA timeout 0)
    int64_t rto_max_ps
    int32_t retry_limit         # consecutive timeouts before the QP goes to the error state
    int32_t pad3
    int64_t qp_errors           # QPs that gave up (retry limit exceeded)
    int64_t cnp_interval_ps     # NP: at most one CNP per QP per interval (DCQCN: 50 us)
    int64_t retx_pkts
    int64_t timeouts
    int64_t cnps
    int64_t naks
    # DCQCN (all rates bit/s, times ps)
    int32_t dcqcn
    int32_t dc_f                # F: fast-recovery stages
    double dc_g                 # alpha gain g
    int64_t dc_alpha_ps         # alpha timer
    int64_t dc_timer_ps         # rate-increase timer T
    int64_t dc_bytes            # byte counter B
    int64_t dc_rai_bps          # additive increase R_AI
    int64_t dc_rhai_bps         # hyper increase R_HAI
    int64_t dc_min_bps          # rate floor
    double dc_min_dec           # largest cut per CNP, as a fraction kept (e.g. 0.5)
    # Load/Store (csrc/ethlink.pxd)
    LsOp* ls_ops
    int32_t n_ls_ops
    LsGpu* ls_gpus
    int32_t ls_prio             # traffic class of Load/Store frames
    int32_t ls_header           # 0: ethlink v1 compact header, 1: RoCEv2 (one op per frame)
    int32_t ls_relaxed          # 0: strict per destination (one path), 1: relaxed (sprayed)
    int32_t ls_coalesce_bytes   # largest coalesced frame; 0: no coalescing
    int64_t ls_coalesce_wait_ps # longest a transaction waits for company
    int64_t ls_target_ps        # target memory latency before a response leaves
    int64_t ls_timeout_ps       # request sent again after this without completion; 0: never
    int64_t ls_payload_bytes    # data bytes moved by completed Load/Store operations
    int64_t ls_wire_bytes       # wire bytes (frame + preamble + IFG) of Load/Store frames sent by NICs
    int64_t ls_frames
    int64_t ls_retries
    # CBFC
    int32_t cbfc_mask           # bit p: priority p uses credit-based flow control
    int32_t cbfc_cell           # bytes per credit
    int64_t cbfc_update_cells   # freed cells that trigger a credit update
    int64_t cbfc_updates
    # LLR
    int64_t llr_replays
    int64_t fcs_drops
    # rate samples: (time, qp, rate) on every DCQCN change
    int64_t* rate_log
    int64_t rate_n
    int64_t rate_cap
    # trace ring
    TraceRec* trace             # the trace ring (malloc; grows when an event overfills it)
    int64_t trace_n
    int64_t trace_cap           # records allocated
    int64_t trace_batch         # the loop stops for a drain when trace_n + margin passes this
    int64_t trace_margin        # rows one event may write: TRACE_MARGIN + 4 x transactions per frame
    int32_t trace_level
    int32_t error               # nonzero: the loop stopped on an internal error (see engine.pyx)
    # PFC buffer model and deadlock detection (csrc/pfc.pxd)
    int64_t pfc_floor           # the dynamic XOFF never falls below xon_offset + this (bytes)
    int64_t lossless_drops      # frames of lossless priorities dropped (any reason)
    int32_t* dl_cycle           # queue indices of the deadlock cycle found (malloc), or NULL
    int32_t dl_cycle_n
    int32_t dl_armed            # 1 while a deadlock check is scheduled (only while packets live)
    int64_t spurious            # RoCE: copies of already-accepted PSNs received (see Qp.spurious)
    int64_t bytes_retx          # payload bytes of retransmitted copies (RoCE data, READ responses)
    int64_t bytes_discarded     # payload bytes of data frames a transport receiver discarded
    int64_t bytes_dropped_flow  # payload bytes of dropped flow data frames (bytes_dropped less Load/Store)
    # HPCC (csrc/hpcc.pxd)
    int32_t hpcc                # 1: RoCE data frames carry INT, ACKs echo it, QPs run HPCC
    int32_t hp_max_stage        # maxStage: AI stages before a multiplicative step is forced
    double hp_eta               # eta: target utilization
    int64_t hp_t_ps             # T: base RTT, ps
    int64_t hp_w_init           # W_init = line rate x T, bytes (also the window's cap)
    int64_t hp_w_ai             # W_AI, bytes
    int64_t hp_w_floor          # smallest window, bytes (min rate x T)
    IntStack* hp_int            # INT records of each packet, pkt_cap of them (malloc), or NULL
    IntStack* hp_prev           # each QP's INT records of its previous ACK, n_qps (malloc), or NULL
    int64_t hp_records          # INT records pushed by switches
    int64_t hp_int_bytes        # INT header bytes carried across links (per link crossing)
    # UET (csrc/uet.pxd)
    uint8_t* uet_st             # per-PSN state of every UET endpoint (Qp.uet_base..+uet_cap):
                                # sender UST_*, receiver 1 = received (owned by engine.pyx)
    int64_t* uet_sent_ps        # sender: when each PSN was last sent, ps
    int32_t uet_spray           # 1: every UET packet carries its own entropy (spraying)
    int32_t uet_trim            # 1: switches trim UET data frames that fail admission
    int32_t uet_trim_bytes      # frame bytes (FCS included) a trimmed frame keeps
    int32_t uet_trim_prio       # priority a trimmed frame is forwarded at
    int32_t uet_sack_bits       # SACK bitmap width (64 in ACK_CC)
    int32_t uet_retry_limit     # retransmissions of a QP without a newly acknowledged PSN
                                # before it gives up (Qp.retries counts them)
    int64_t uet_rto_ps          # per-packet retransmission timeout, ps
    int64_t uet_trimmed         # data frames trimmed
    int64_t uet_trimmed_bytes   # payload bytes cut off by trimming
    int64_t uet_nacks           # NACK frames sent by receivers
    int64_t uet_sacks           # ACK frames sent whose SACK bitmap is not empty
    int64_t uet_sel_retx        # selective retransmissions (one PSN each)
    int64_t uet_acks            # ACK_CC frames sent
    # NSCC (csrc/nscc.pxd): parameters, scaled by ethlink.sim as htsim's initNsccParams does
    int32_t nscc                # 1: NSCC sets every UET sender's window
    int32_t nscc_pad
    int64_t nscc_rtt_ps         # network base RTT: the unloaded RTT of the longest path, ps
    int64_t nscc_target_ps      # target queueing delay [_target_Qdelay]
    int64_t nscc_qa_ps          # quick-adapt threshold on the average delay [_qa_threshold]
    int64_t nscc_fast_ps        # fast increase below this delay (1 us)
    int64_t nscc_period_ps      # adjustment period [_adjust_period_threshold]
    int64_t nscc_adjust_bytes   # adjustment byte threshold and largest step [_adjust_bytes_threshold]
    double nscc_alpha           # proportional increase, bytes per ps of delay below target [_alpha]
    double nscc_fi              # fair increase, in MTUs per acknowledged byte [_fi]
    double nscc_eta             # additive step per period, bytes [_eta]
    double nscc_gamma           # multiplicative decrease gain [_gamma]
    double nscc_delay_alpha     # EWMA gain of the average delay [_delay_alpha]
    double nscc_maxwnd_bdp      # window ceiling and start, in BDPs (1.5)
    int64_t nscc_qa_total
    int64_t nscc_md_total


# ---------------------------------------------------------------------------------------
# A cache-line prefetch hint (GCC/Clang builtin): for data the loop will touch soon.
cdef extern from *:
    """
    #define prefetch(p) __builtin_prefetch((const void*)(p))
    #define clz32(x) __builtin_clz(x)
    #define ctz32(x) __builtin_ctz(x)
    """
    void prefetch(const void* p) noexcept nogil
    int clz32(uint32_t x) noexcept nogil     # leading zero bits; x must not be 0
    int ctz32(uint32_t x) noexcept nogil     # trailing zero bits; x must not be 0


# ---------------------------------------------------------------------------------------
# Serialization time, exact: ceil(bits * 1e12 / rate).
cdef extern from "muldiv.h":
    int64_t ethlink_mul_div_ceil(int64_t a, int64_t b, int64_t c) nogil

cdef inline int64_t ser_ps(int64_t nbytes, int64_t rate_bps) noexcept nogil:
    cdef int64_t ps_per_s = 1000000000000
    cdef int64_t num
    if nbytes < 1048576:
        # NOTE: fast path; bits * 1e12 fits int64 below 1 MiB, and frames always do.
        num = nbytes * 8 * ps_per_s
        return (num + rate_bps - 1) // rate_bps
    return ethlink_mul_div_ceil(nbytes * 8, ps_per_s, rate_bps)


cdef inline int64_t port_ser_ps(Port* pt, int64_t nbytes) noexcept nogil:
    # ser_ps at the port's rate. NOTE: a frame start divides twice by the rate (its wire
    # time and its last bit's arrival), a long-latency instruction on the hop's critical
    # path; at rates dividing 8e12 (1G ... 1.6T) the exact time is a multiplication.
    if pt.ps_per_byte > 0:
        return nbytes * pt.ps_per_byte
    return ser_ps(nbytes, pt.rate_bps)


# ---------------------------------------------------------------------------------------
# Seeded hashing (splitmix64 finaliser, Steele et al. 2014): ECMP and spraying use a hash
# of (seed, node, key) so a path choice depends on nothing but its inputs.
cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)

cdef inline uint64_t hash3(uint64_t seed, uint64_t a, uint64_t b) noexcept nogil:
    return mix64(seed ^ mix64(a * <uint64_t>0x9E3779B97F4A7C15 + b))


# ---------------------------------------------------------------------------------------
# Scheduling: events pop in (time, seq) order (evq.h). Returns -1 when memory runs out.
cdef inline int schedule(Sim* s, int64_t time, int32_t kind, int32_t obj, int64_t arg) noexcept nogil:
    s.seq += 1
    return schedule_seq(s, time, s.seq - 1, kind, obj, arg)

cdef inline int schedule_seq(Sim* s, int64_t time, int64_t seq, int32_t kind, int32_t obj, int64_t arg) noexcept nogil:
    # Insert an event with a sequence number taken earlier (link FIFOs keep their order).
    if evq_push5(&s.evq, time, seq, kind, obj, arg):
        s.error = 1
        return -1
    return 0


# ---------------------------------------------------------------------------------------
# Link arrival FIFOs. A link delivers frames in the order it sent them, at increasing
# times (data frames: last bit or cut-through header plus the receiver's latency; control
# frames: last bit plus the PFC response time, a FIFO of their own), so only the earliest
# arrival of each port needs to be a queued event; the rest wait in order with the
# sequence number they got when sent. The events pop in exactly the (time, seq) order a
# queue holding all of them would give.
# NOTE: the event queue then holds busy links and timers, not every frame in flight.
# Each frame in a FIFO holds its successor's index, time and sequence number (written
# when the successor is pushed, behind it): the arrival being served already has its
# frame in cache, so queueing the next one reads nothing else. Storing a frame's own
# time there instead made every pop a cache miss on the frame behind (a sixth of the
# 1024-host RoCE permutation's time, perf).
cdef inline int link_push(Sim* s, int32_t port, int64_t time, int32_t pi, bint ctrl) noexcept nogil:
    cdef Port* pt = &s.ports[port]
    cdef int64_t seq = s.seq
    cdef int32_t tail
    s.seq += 1
    s.pkts[pi].rx_next = -1
    tail = pt.crx_tail if ctrl else pt.rx_tail
    if ctrl:
        pt.crx_tail = pi
    else:
        pt.rx_tail = pi
    if tail < 0:                            # the link's only arrival: queue it now
        return schedule_seq(s, time, seq, EV_LINK_RX, port, pi)
    s.pkts[tail].rx_next = pi
    s.pkts[tail].rx_time = time
    s.pkts[tail].rx_seq = seq
    return 0


cdef inline void link_pop(Sim* s, int32_t port, int32_t pi, bint ctrl) noexcept nogil:
    # Frame pi, the port's earliest arrival, left the event queue: queue the one behind it.
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t n = pk.rx_next
    if n < 0:
        if ctrl:
            s.ports[port].crx_tail = -1
        else:
            s.ports[port].rx_tail = -1
        return
    schedule_seq(s, pk.rx_time, pk.rx_seq, EV_LINK_RX, port, n)


# ---------------------------------------------------------------------------------------
# Packet pool: a free list threaded through Packet.next, then the never-used records in
# order; grows by doubling.
cdef enum:
    PKT_MAX = 1073741824        # 2**30 packets at once (pkt_alloc refuses more)
    POOL_AHEAD = 4 << 20        # bytes of never-used records the helper keeps faulted in
    POOL_STEP = 2 << 20         # ... asked for each time pkt_top crosses another 2 MiB


cdef inline Packet* pkt_pool_alloc(Sim* s, int64_t n) noexcept nogil:
    # n packet records, page aligned (each record is two cache lines), or NULL: see pool.h.
    # The engine itself touches the first n records and the pool's first
    # ETHLINK_POOL_SMALL bytes; the helper (pool.h) is first asked to go ahead once the
    # engine's records reach half of that: a run of fewer packets never starts it.
    s.pool_next = max(n * <int64_t>sizeof(Packet), <int64_t>ETHLINK_POOL_SMALL // 2)
    return <Packet*>ethlink_pool_alloc(n * sizeof(Packet), PKT_MAX * sizeof(Packet), &s.pool)


cdef inline int32_t pkt_alloc(Sim* s) noexcept nogil:
    cdef int32_t i, old
    cdef Packet* p
    cdef IntStack* hi
    if s.free_head >= 0:
        i = s.free_head
        s.free_head = s.pkts[i].next
    else:
        # NOTE: never-used records are handed out in order, not threaded on the free list
        # when the pool grows: a page of the pool is first touched when a packet needs it.
        if s.pkt_top == s.pkt_cap:
            old = s.pkt_cap
            if old >= PKT_MAX:
                s.error = 2
                return NO_PKT
            p = <Packet*>ethlink_pool_grow(s.pkts, old * sizeof(Packet), 2 * <int64_t>old * sizeof(Packet), s.pool)
            if p == NULL:
                s.error = 1
                return NO_PKT
            s.pkts = p
            if s.hp_int != NULL:
                hi = <IntStack*>realloc(s.hp_int, 2 * old * sizeof(IntStack))
                if hi == NULL:
                    s.error = 1
                    return NO_PKT
                s.hp_int = hi
            s.pkt_cap = 2 * old
        i = s.pkt_top
        s.pkt_top += 1
        if <int64_t>i * <int64_t>sizeof(Packet) >= s.pool_next and s.pool != NULL:
            s.pool_next = <int64_t>i * <int64_t>sizeof(Packet) + POOL_STEP
            ethlink_pool_populate(s.pool, <int64_t>i * <int64_t>sizeof(Packet) + POOL_AHEAD)
    s.pkts[i].next = -1
    s.pkts[i].uid = s.next_uid
    s.next_uid += 1
    s.pkts[i].t_created = s.now
    s.pkts[i].hops = 0
    s.pkts[i].flags = 0
    s.pkts[i].ecn = 0
    s.pkts[i].opcode = 0
    s.pkts[i].psn = 0
    s.pkts[i].offset = 0
    s.pkts[i].payload = 0               # control frames carry none (a reused slot keeps the old value)
    s.pkts[i].in_port = -1
    s.pkts[i].egress = -1
    s.pkts[i].qp = -1
    s.pkts[i].syndrome = 0
    s.pkts[i].ntx = 0
    s.pkts[i].llr_seq = 0
    if s.hp_int != NULL:
        s.hp_int[i].n = 0
    s.pkts_live += 1
    if s.pkts_live > s.pkts_live_hwm:
        s.pkts_live_hwm = s.pkts_live
    if not s.dl_armed and s.deadlock_check_ps > 0 and s.lossless_mask:
        # checks run on the period's grid while packets exist (idle timers need none)
        s.dl_armed = 1
        schedule(s, (s.now // s.deadlock_check_ps + 1) * s.deadlock_check_ps, EV_DEADLOCK_CHECK, 0, 0)
    return i

cdef inline TraceRec* trace_slot(Sim* s) noexcept nogil:
    # The next record of the ring. The loop drains the ring before trace_batch; an event
    # that writes past the allocation (a burst of Load/Store issues) grows it instead of
    # losing rows. NULL when tracing is off, or (with Sim.error) when memory runs out.
    cdef TraceRec* grown
    if s.trace_level == TRACE_OFF:
        return NULL
    if s.trace_n >= s.trace_cap:
        grown = <TraceRec*>realloc(s.trace, 2 * s.trace_cap * sizeof(TraceRec))
        if grown == NULL:
            s.error = 1
            return NULL
        s.trace = grown
        s.trace_cap *= 2
    s.trace_n += 1
    return &s.trace[s.trace_n - 1]


cdef inline void trace_op(Sim* s, uint8_t event, int32_t host, int32_t index, int32_t src,
                          int32_t dst, int32_t prio, int64_t nbytes, int64_t addr, uint8_t kind,
                          uint8_t opcode, int32_t qp, uint8_t flags) noexcept nogil:
    # An operation-level row (TE_OP_ISSUE / TE_OP_COMPLETE) at the issuing host: `flow` is
    # the message or Load/Store operation index, `payload` its bytes, `addr` the message's
    # bytes (int64) or the Load/Store operation's address, `opcode` its verb (Verb) or
    # Load/Store kind (LsKind), `kind` FK_ROCE/FK_RAW or FK_ETHLINK.
    cdef TraceRec* r = trace_slot(s)
    if r == NULL:
        return
    r.time_ps = s.now
    r.pkt = -1
    r.qbytes = 0
    r.addr = addr
    r.node = s.host_node[host]
    r.port = -1
    r.flow = index
    r.src = src
    r.dst = dst
    r.size = 0
    r.payload = <int32_t>nbytes if nbytes < 2147483647 else 2147483647
    r.psn = 0
    r.qp = qp
    r.ntx = 0
    r.event = event
    r.kind = kind
    r.prio = <uint8_t>prio
    r.ecn = 0
    r.reason = 0
    r.opcode = opcode
    r.flags = flags
    r.syndrome = 0


cdef inline void trace_flow(Sim* s, uint8_t event, int32_t f) noexcept nogil:
    cdef Flow* fl = &s.flows[f]
    trace_op(s, event, fl.src, f, fl.src, fl.dst, fl.prio, fl.size, fl.size,
             FK_RAW if fl.verb == VERB_RAW else (FK_UET if s.qps[fl.qp].transport == TR_UET else FK_ROCE),
             <uint8_t>fl.verb, fl.qp, 0)


cdef inline void complete_message(Sim* s, int32_t f) noexcept nogil:
    # Message f completed (CQE): post the operations that waited for it, `start_ps` later
    # (for a dependent operation start_ps holds that delay until it is posted).
    cdef int32_t i, d
    s.flows[f].complete_ps = s.now
    trace_flow(s, TE_OP_COMPLETE, f)
    for i in range(s.dep_off[f], s.dep_off[f + 1]):
        d = s.dep_list[i]
        s.flows[d].deps_left -= 1
        if s.flows[d].deps_left == 0:
            s.flows[d].start_ps += s.now
            schedule(s, s.flows[d].start_ps, EV_FLOW_START, d, 0)


cdef inline void tx_done_elided(Sim* s, Port* pt) noexcept nogil:
    # An elided EV_TX_DONE counts as having happened at pt.tx_end: the port is idle.
    pt.busy = 0
    s.events += 1
    if pt.tx_end > s.t_active:
        s.t_active = pt.tx_end


cdef inline int64_t tx_next_hint(Sim* s, int32_t p) noexcept nogil:
    # EV_TX_DONE's arg: the frame port p will likely send next (its highest non-empty
    # queue's head, as prio << 32 | packet), or -1. A prefetch hint only (run_loop): by
    # the event, another frame may have come first.
    cdef uint32_t m = <uint32_t>s.ports[p].qmask
    cdef int32_t prio
    if m == 0:
        return -1
    prio = 31 - clz32(m)
    return (<int64_t>prio << 32) | s.queues[p * NPRIO + prio].head


cdef inline bint port_busy(Sim* s, int32_t p) noexcept nogil:
    # Whether port p is sending (a frame or its IFG).
    # NOTE: a port that had nothing else to send when it started a frame gets no
    # EV_TX_DONE (tx_start: busy == 2), since that event would only find it idle: an
    # eighth to a quarter of all events on the large fabrics. When something wants the
    # port (a frame queued, a kick), the event is made then, with the time and sequence
    # number it would have had, so events still run in exactly the same order; if that
    # time has passed, it counts as having happened (tx_done_elided). settle_elided
    # does the same for every port when the loop stops.
    cdef Port* pt = &s.ports[p]
    if pt.busy != 2:
        return pt.busy
    if pt.tx_end < s.now or (pt.tx_end == s.now and pt.tx_seq < s.cur_seq):
        tx_done_elided(s, pt)
        return 0
    pt.busy = 1
    schedule_seq(s, pt.tx_end, pt.tx_seq, EV_TX_DONE, p, tx_next_hint(s, p))
    return 1


cdef inline void kick(Sim* s, int32_t p) noexcept nogil:
    # Ask port p to try to start a frame now (used when a protocol queues a frame).
    if not port_busy(s, p) and not s.ports[p].kicked:
        s.ports[p].kicked = 1
        schedule(s, s.now, EV_KICK, p, 0)


cdef inline uint64_t rng_next(uint64_t* state) noexcept nogil:
    # xorshift64* (Vigna 2016): one stream per port, seeded by hash3(seed, port).
    cdef uint64_t x = state[0]
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    state[0] = x
    return x * <uint64_t>0x2545F4914F6CDD1D

cdef inline double rng_uniform(uint64_t* state) noexcept nogil:
    return <double>(rng_next(state) >> 11) * (1.0 / 9007199254740992.0)


cdef inline void pkt_free(Sim* s, int32_t i) noexcept nogil:
    s.pkts[i].next = s.free_head
    s.free_head = i
    s.pkts_live -= 1


# ---------------------------------------------------------------------------------------
# The one trace point: every packet event of every protocol passes here. It writes a
# fixed-size record; the loop returns to Python to drain the ring when it is nearly full.
cdef inline void trace_pkt(Sim* s, uint8_t event, int32_t node, int32_t port, int32_t pi,
                           int64_t qbytes, uint8_t reason) noexcept nogil:
    # NOTE: the level test inline at every call site; the record is written out of line
    # (a run without a trace paid a call with seven arguments per hop and event).
    if s.trace_level != TRACE_OFF:
        trace_pkt_rec(s, event, node, port, pi, qbytes, reason)


cdef inline void trace_pkt_rec(Sim* s, uint8_t event, int32_t node, int32_t port, int32_t pi,
                               int64_t qbytes, uint8_t reason) noexcept nogil:
    cdef TraceRec* r
    cdef Packet* p
    if s.trace_level == TRACE_ENDPOINTS and s.nodes[node].kind != NODE_HOST:
        return
    r = trace_slot(s)
    if r == NULL:
        return
    p = &s.pkts[pi]
    r.time_ps = s.now
    r.pkt = p.uid
    r.qbytes = qbytes
    r.addr = p.offset
    r.node = node
    r.port = port
    r.flow = p.flow
    r.src = p.src
    r.dst = p.dst
    r.size = p.size
    r.payload = p.payload
    r.psn = p.psn
    r.event = event
    r.kind = p.kind
    r.prio = p.prio
    r.ecn = p.ecn
    r.reason = reason
    r.opcode = p.opcode
    r.flags = p.flags
    r.syndrome = p.syndrome
    r.qp = p.qp
    r.ntx = p.ntx
