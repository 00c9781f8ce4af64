# Load/Store semantics over Ethernet: the GPU-side engine of ethlink's scale-up transport
# (ByteDance EthLink white paper, 2025: Load/Store and RDMA on one Ethernet stack; SONiC
# scale-up requirements: < 2 KB packets, < 1 us, ordering for operations on the same path).
#
# What it models. Each GPU issues its operations (load, store with or without completion,
# 8 B fetch-add and compare-swap, fence) in order. An operation needs one of the GPU's
# `tags` (outstanding transactions); without a free tag it waits, so latency feeds back
# into throughput as it does on hardware. A fence waits until every earlier operation of
# its GPU completed (a posted store: until its data reached the target). Requests and responses are transactions in ethlink v1 frames
# (ethlink/frames: Ether + 802.1Q + 8 B base header + 16 B per transaction + data + FCS);
# transactions to the same destination may share a frame (coalescing: up to
# ls_coalesce_bytes, waiting at most ls_coalesce_wait_ps for company). With the RoCEv2
# header profile every operation is its own RoCEv2 frame instead (WRITE_ONLY, READ_REQUEST
# / READ_RESPONSE_ONLY, FETCH_ADD / CMP_SWAP / ATOMIC_ACKNOWLEDGE, ACK), so the cost of the
# headers can be compared on the same workload. The target answers after
# ls_target_ps (memory access). Ordering "strict" keeps every operation to one destination
# on one path (so they stay in order); "relaxed" sprays frames over the GPU's ports.
#
# Completion: a load, atomic or acknowledged store completes when its response reaches the
# issuer; a posted store frees its tag when its frame leaves the NIC and completes when its
# data reaches the target. An operation not completed after ls_timeout_ps is requested
# again (end-to-end retry; with LLR on the links, none is needed).
#
# Limits: data is not simulated (atomics return no value); a retried transaction travels
# alone, and one still in flight in an older coalesced frame may end that frame's chain
# early (the rest then time out and retry); atomics are assumed idempotent on retry.
from core cimport *
from nic cimport host_port, host_port_k
from port cimport q_push

cdef enum:
    EL_BASE_BYTES = 30          # Ether 14 + 802.1Q 4 + ELBase 8 + FCS 4
    EL_TXN_BYTES = 16
    RC_BASE_BYTES = 66          # RoCEv2: Ether+802.1Q+IPv4+UDP+BTH+ICRC+FCS

cdef enum ElOp:                 # ethlink v1 transaction opcodes (ethlink/frames ElOpcode)
    EL_LOAD_REQ = 0x01
    EL_LOAD_RESP = 0x02
    EL_STORE = 0x03
    EL_STORE_ACK = 0x04
    EL_ATOMIC_FADD = 0x05
    EL_ATOMIC_CAS = 0x06
    EL_ATOMIC_RESP = 0x07


cdef inline int32_t req_opcode(int32_t kind, bint roce) noexcept nogil:
    if roce:   # BTH opcodes (IBA table 41)
        if kind == LS_LOAD:
            return 0x0C             # RDMA READ REQUEST
        if kind == LS_FADD:
            return 0x14             # FETCH_ADD
        if kind == LS_CAS:
            return 0x13             # CMP_SWAP
        return 0x0A                 # RDMA WRITE ONLY
    if kind == LS_LOAD:
        return EL_LOAD_REQ
    if kind == LS_FADD:
        return EL_ATOMIC_FADD
    if kind == LS_CAS:
        return EL_ATOMIC_CAS
    return EL_STORE


cdef inline int32_t resp_opcode(int32_t kind, bint roce) noexcept nogil:
    if roce:
        if kind == LS_LOAD:
            return 0x10             # READ RESPONSE ONLY
        if kind == LS_STORE_ACK:
            return 0x11             # ACKNOWLEDGE
        return 0x12                 # ATOMIC ACKNOWLEDGE
    if kind == LS_LOAD:
        return EL_LOAD_RESP
    if kind == LS_STORE_ACK:
        return EL_STORE_ACK
    return EL_ATOMIC_RESP


cdef inline int32_t txn_data(int32_t kind, int32_t size, bint response) noexcept nogil:
    # Data bytes a transaction carries (ethlink/frames el_data_len).
    if kind == LS_LOAD:
        return size if response else 0
    if kind == LS_STORE or kind == LS_STORE_ACK:
        return 0 if response else size
    if kind == LS_FADD:
        return 8
    if kind == LS_CAS:
        return 8 if response else 16
    return 0


cdef inline int32_t roce_bytes(int32_t kind, int32_t data, bint response) noexcept nogil:
    # One RoCEv2 frame per operation: base + extension headers + data padded to 4 B.
    cdef int32_t ext
    if response:
        if kind == LS_FADD or kind == LS_CAS:
            return RC_BASE_BYTES + 12                            # AETH + AtomicAckETH (the old value)
        ext = 4                                                  # AETH
    elif kind == LS_FADD or kind == LS_CAS:
        ext = 28                                                 # AtomicETH
        data = 0
    else:
        ext = 16                                                 # RETH
    return RC_BASE_BYTES + ext + data + ((4 - (data & 3)) & 3)


cdef inline int32_t frame_min(int32_t size) noexcept nogil:
    return size if size >= MIN_FRAME_BYTES else MIN_FRAME_BYTES


cdef inline void tag_change(Sim* s, LsGpu* g, int32_t delta) noexcept nogil:
    g.tag_ps += <int64_t>g.outstanding * (s.now - g.tag_since)
    g.tag_since = s.now
    g.outstanding += delta


cdef inline void ls_emit(Sim* s, int32_t pi) noexcept nogil:
    # A finished Load/Store frame goes into its NIC port's queue (port held in egress).
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t port = pk.egress
    cdef Queue* q = &s.queues[port * NPRIO + pk.prio]
    pk.egress = -1
    pk.size = frame_min(pk.size)
    s.ls_frames += 1
    s.ls_wire_bytes += pk.size + WIRE_EXTRA_BYTES
    s.pkts_sent += 1
    q_push(s, q, pi)
    trace_pkt(s, TE_ENQUEUE, s.ports[port].node, port, pi, q.bytes, DR_NONE)
    kick(s, port)


cdef inline void ls_flush(Sim* s, int32_t gi) noexcept nogil:
    cdef LsGpu* g = &s.ls_gpus[gi]
    if g.open_pi >= 0:
        ls_emit(s, g.open_pi)
        g.open_pi = -1
        g.open_gen += 1


cdef inline int32_t ls_port(Sim* s, int32_t gi, int32_t dst) noexcept nogil:
    cdef LsGpu* g = &s.ls_gpus[gi]
    if s.ls_relaxed:
        g.spray += 1
        return host_port_k(s, gi, dst, g.spray)
    return host_port(s, gi, dst, <uint64_t>gi * <uint64_t>s.n_hosts + <uint64_t>dst)


cdef inline void trace_txn(Sim* s, int32_t gi, int32_t pi, int32_t oi, bint response) noexcept nogil:
    # A TE_TXN row: transaction `oi` joined frame `pi` (built at GPU gi) as its
    # (ntx - 1)-th: tag, address, length (`size`: the bytes the transaction addresses,
    # 8 for atomics), data it carries (`payload`) and its own opcode. With these rows a
    # coalesced frame is rebuilt exactly, retries and reordering included.
    cdef TraceRec* r = trace_slot(s)
    cdef Packet* pk = &s.pkts[pi]
    cdef LsOp* op = &s.ls_ops[oi]
    if r == NULL:
        return
    r.time_ps = s.now
    r.pkt = pk.uid
    r.qbytes = 0
    r.addr = op.addr
    r.node = s.host_node[gi]
    r.port = pk.egress
    r.flow = oi
    r.src = pk.src
    r.dst = pk.dst
    r.size = 8 if op.kind == LS_FADD or op.kind == LS_CAS else op.size
    r.payload = txn_data(op.kind, op.size, response)
    r.psn = op.tag
    r.qp = -1
    r.ntx = pk.ntx - 1
    r.event = TE_TXN
    r.kind = pk.kind
    r.prio = pk.prio
    r.ecn = 0
    r.reason = DR_NONE
    r.opcode = <uint8_t>(resp_opcode(op.kind, s.ls_header == 1) if response
                         else req_opcode(op.kind, s.ls_header == 1))
    r.flags = PF_LS | (PF_RESPONSE if response else 0) | (PF_TXN_ACK if not response and op.kind == LS_STORE_ACK else 0)
    r.syndrome = 0


cdef inline void ls_add(Sim* s, int32_t gi, int32_t dst, int32_t oi, bint response) noexcept nogil:
    # Put transaction `oi` (request or response) from GPU gi to GPU dst into a frame.
    cdef LsGpu* g = &s.ls_gpus[gi]
    cdef LsOp* op = &s.ls_ops[oi]
    cdef bint roce = s.ls_header == 1
    cdef int32_t data = txn_data(op.kind, op.size, response)
    cdef int32_t add = EL_TXN_BYTES + data, pi, j
    cdef Packet* pk
    if g.open_pi >= 0:
        pk = &s.pkts[g.open_pi]
        if (pk.dst != dst or ((pk.flags & PF_RESPONSE) != 0) != response
                or pk.size + add > s.ls_coalesce_bytes):
            ls_flush(s, gi)
        else:
            # A retry (ls.timeout shorter than the coalescing wait) of a transaction still
            # waiting in this open frame adds nothing: it leaves with the frame. Linking it
            # again would close its chain into a cycle, which the frame's walks never leave.
            j = pk.flow
            while j >= 0:
                if j == oi:
                    return
                j = s.ls_ops[j].chain
            op.chain = -1
            s.ls_ops[g.open_tail].chain = oi
            g.open_tail = oi
            pk.size += add
            pk.payload += data
            pk.ntx += 1
            trace_txn(s, gi, g.open_pi, oi, response)
            if pk.size + EL_TXN_BYTES > s.ls_coalesce_bytes:
                ls_flush(s, gi)
            return
    op.chain = -1
    pi = pkt_alloc(s)
    if pi < 0:
        return
    pk = &s.pkts[pi]
    pk.kind = FK_ROCE if roce else FK_ETHLINK
    pk.flags = PF_LS | (PF_RESPONSE if response else 0)
    pk.src = gi
    pk.dst = dst
    pk.prio = <uint8_t>s.ls_prio
    pk.flow = oi
    pk.psn = op.tag
    pk.offset = op.addr
    pk.payload = data
    pk.ntx = 1
    pk.opcode = <uint8_t>(resp_opcode(op.kind, roce) if response else req_opcode(op.kind, roce))
    pk.size = roce_bytes(op.kind, data, response) if roce else EL_BASE_BYTES + add
    pk.egress = op.port if not response else ls_port(s, gi, dst)
    trace_txn(s, gi, pi, oi, response)
    if roce or s.ls_coalesce_bytes == 0 or pk.size + EL_TXN_BYTES > s.ls_coalesce_bytes:
        ls_emit(s, pi)
        return
    g.open_pi = pi
    g.open_tail = oi
    g.open_gen += 1
    schedule(s, s.now + s.ls_coalesce_wait_ps, EV_LS, gi, LE_FLUSH | (<int64_t>g.open_gen << 8))


cdef inline void ls_arm_timeout(Sim* s, int32_t oi) noexcept nogil:
    if s.ls_timeout_ps > 0:
        s.ls_ops[oi].gen += 1
        schedule(s, s.now + s.ls_timeout_ps, EV_LS, oi, LE_TIMEOUT | (<int64_t>s.ls_ops[oi].gen << 8))


cdef inline void ls_try_issue(Sim* s, int32_t gi) noexcept nogil:
    # Issue the GPU's operations in order while their time has come and a tag is free.
    cdef LsGpu* g = &s.ls_gpus[gi]
    cdef LsOp* op
    cdef int32_t oi
    while g.pend >= 0:
        oi = g.pend
        op = &s.ls_ops[oi]
        if op.issue_ps > s.now:
            g.issue_gen += 1
            schedule(s, op.issue_ps, EV_LS, gi, LE_ISSUE | (<int64_t>g.issue_gen << 8))
            return
        if op.kind == LS_FENCE:
            if g.outstanding > 0 or g.posted > 0:
                return                       # a completion (or a posted store landing) calls again
            op.start_ps = s.now
            op.complete_ps = s.now
            trace_op(s, TE_OP_ISSUE, gi, oi, gi, gi, s.ls_prio, 0, 0, FK_ETHLINK, <uint8_t>op.kind, -1, PF_LS)
            trace_op(s, TE_OP_COMPLETE, gi, oi, gi, gi, s.ls_prio, 0, 0, FK_ETHLINK, <uint8_t>op.kind, -1, PF_LS)
            g.pend = op.next
            continue
        if g.outstanding >= g.tags:
            return
        op.start_ps = s.now
        trace_op(s, TE_OP_ISSUE, gi, oi, gi, op.dst, s.ls_prio, op.size, op.addr, FK_ETHLINK, <uint8_t>op.kind,
                 -1, PF_LS)
        op.tag = g.next_tag
        g.next_tag = (g.next_tag + 1) % g.tags
        tag_change(s, g, 1)
        op.port = ls_port(s, gi, op.dst)
        g.pend = op.next
        ls_add(s, gi, op.dst, oi, 0)
        if op.kind != LS_STORE:
            ls_arm_timeout(s, oi)
        else:
            g.posted += 1


cdef inline void ls_complete(Sim* s, int32_t oi) noexcept nogil:
    cdef LsOp* op = &s.ls_ops[oi]
    cdef LsGpu* g = &s.ls_gpus[op.src]
    if op.complete_ps >= 0:
        return                               # a duplicate after a retry
    op.complete_ps = s.now
    trace_op(s, TE_OP_COMPLETE, op.src, oi, op.src, op.dst, s.ls_prio, op.size, op.addr, FK_ETHLINK,
             <uint8_t>op.kind, -1, PF_LS)
    op.gen += 1                              # cancels its timeout
    g.ops_done += 1
    s.ls_payload_bytes += op.size if op.kind <= LS_STORE_ACK else 8
    if op.kind != LS_STORE:
        tag_change(s, g, -1)
    else:
        g.posted -= 1                        # a fence may be waiting for it
    ls_try_issue(s, op.src)


cdef inline void ls_on_tx(Sim* s, int32_t pi) noexcept nogil:
    # A Load/Store request frame leaves its source NIC: posted stores free their tags.
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t oi = pk.flow
    cdef LsGpu* g = &s.ls_gpus[pk.src]
    cdef bint freed = 0
    while oi >= 0:
        if s.ls_ops[oi].kind == LS_STORE:
            tag_change(s, g, -1)
            freed = 1
        oi = s.ls_ops[oi].chain
    if freed:
        ls_try_issue(s, pk.src)


cdef inline void ls_rx(Sim* s, int32_t pi) noexcept nogil:
    # A Load/Store frame reached its destination GPU.
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t oi = pk.flow, nxt
    s.pkts_delivered += 1
    while oi >= 0:
        nxt = s.ls_ops[oi].chain
        if pk.flags & PF_RESPONSE:
            ls_complete(s, oi)
        elif s.ls_ops[oi].kind == LS_STORE:
            ls_complete(s, oi)
        else:
            schedule(s, s.now + s.ls_target_ps, EV_LS, oi, LE_RESPOND)
        oi = nxt


cdef inline void ls_event(Sim* s, int32_t obj, int64_t arg) noexcept nogil:
    cdef int32_t kind = <int32_t>(arg & 0xFF), gen = <int32_t>(arg >> 8)
    cdef LsOp* op
    if kind == LE_ISSUE:
        if gen == s.ls_gpus[obj].issue_gen:
            ls_try_issue(s, obj)
    elif kind == LE_FLUSH:
        if gen == s.ls_gpus[obj].open_gen:
            ls_flush(s, obj)
    elif kind == LE_RESPOND:
        op = &s.ls_ops[obj]
        ls_add(s, op.dst, op.src, obj, 1)
    else:
        op = &s.ls_ops[obj]
        if op.complete_ps < 0 and gen == op.gen:
            op.retries += 1
            s.ls_retries += 1
            ls_add(s, op.src, op.dst, obj, 0)
            ls_flush(s, op.src)
            ls_arm_timeout(s, obj)
