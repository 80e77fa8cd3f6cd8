# Waitlist backfill (候补), re-release, the no-show grace scan and suspension
# moves (included at the end of _core.pyx; docs/semantics.md, issue 4).
#
# Layout:
#
# * requests: 64-byte records in Core._requests (what a pass reads and a fill
#   writes: one cache line) and 24-byte ones in Core._rq_cold, on their patient's and
#   their account's lists (Core._p_rq / Core._a_rq hold the newest; singly
#   linked), and an OPEN one has an entry in the class FIFO of each candidate
#   session.  Patient.wl says whether the patient's list is non-empty, so a
#   cancel by a patient without requests reads no other memory.
# * class FIFOs: each (session, class) queue is a contiguous run of 12-byte
#   WlEntry records (request, patient, account) in one pool (Core._wq), its
#   region and live range in the session's WlSession block.  Contiguous, so
#   that walking over the entries of closed requests (they gather at the
#   heads: a request filled at one session is near the head of its other
#   candidates too) costs a bit test each (Core._rq_open), not a cache miss.
#   A region that fills up moves to the pool's end at twice the size (or is
#   compacted in place); the whole pool is compacted when it grows past three
#   times its live entries (plus some slack), so memory stays O(live
#   entries).  Blocks are allocated on a session's first request (or no-show
#   scan): Core._wl_of maps a session to its block and stays empty until
#   then, so sessions without a waitlist cost nothing.
# * closing a request (fill, expiry, cancel) only decrements open[s] of its
#   candidates and clears its bit; its FIFO entries are dropped when a pass
#   walks over them, and it leaves its patient's and account's lists when a
#   walk of them meets it (lazy deletion: O(1) amortized, and closing touches
#   no other request).
#
# Every function here takes the Core first and runs without the GIL, except
# the introspection at the end.  With no OPEN request (Core._n_open == 0) a
# pass or a recheck returns after one compare.

cdef int64_t WL_INF = 0x7FFFFFFFFFFFFFFF     # "only an event can clear it"


# -- blocks and entries ----------------------------------------------------------

cdef inline WlSession* wl_block(Core self, int32_t sid) noexcept nogil:
    """The session's block, or NULL when it never had a request or scan."""
    cdef int32_t bi
    if self._wl_of.size() == 0:
        return NULL
    bi = self._wl_of[sid]
    return &self._wls[bi] if bi >= 0 else NULL


cdef int32_t wl_block_need(Core self, int32_t sid) noexcept nogil:
    """The session's block index, allocating it (and Core._wl_of) on first use."""
    cdef WlSession blk
    cdef int32_t bi
    if self._wl_of.size() == 0:
        self._wl_of.assign(self._sessions.size(), -1)
        self._wl_open.assign(self._sessions.size(), 0)
    bi = self._wl_of[sid]
    if bi >= 0:
        return bi
    memset(&blk, 0, sizeof(WlSession))
    blk.recheck_at = -1
    bi = <int32_t>self._wls.size()
    se_grow(self._wls, 1, 8)
    self._wls.push_back(blk)
    self._wl_of[sid] = bi
    return bi


cdef void wl_pool_compact(Core self) noexcept nogil:
    """Rebuild the FIFO pool with only the live range of every queue.  O(pool)."""
    cdef vector[WlEntry, se_alloc[WlEntry]] pool
    cdef size_t bi
    cdef int32_t cl, n, off
    cdef WlQueue* q
    pool.reserve(self._wq.size() - <size_t>self._wq_dead)
    for bi in range(self._wls.size()):
        for cl in range(WL_MAX_QUEUES):
            q = &self._wls[bi].q[cl]
            n = q.len - q.head
            off = <int32_t>pool.size()
            if n > 0:
                pool.insert(pool.end(), self._wq.begin() + (q.off + q.head),
                            self._wq.begin() + (q.off + q.len))
            q.off = off
            q.cap = n
            q.head = 0
            q.len = n
    self._wq.swap(pool)
    self._wq_dead = 0


cdef void wl_enqueue(Core self, int32_t sid, int32_t cl, int32_t r, int32_t p,
                     int32_t a) noexcept nogil:
    """Append request r (of patient p, account a) to the session's class-cl FIFO;
    open[s] += 1.  O(1) amortized."""
    cdef int32_t bi = wl_block_need(self, sid)
    cdef WlQueue* q = &self._wls[bi].q[cl]
    cdef int32_t live, cap, off
    cdef WlEntry ent
    if q.len == q.cap:
        live = q.len - q.head
        if q.head > 0 and live <= q.cap // 2:
            # slide the live range down to the region's start
            memmove(self._wq.data() + q.off, self._wq.data() + q.off + q.head,
                    live * sizeof(WlEntry))
        else:
            if <int64_t>self._wq.size() > 3 * self._wq_live + 4096:
                wl_pool_compact(self)
                q = &self._wls[bi].q[cl]
                live = q.len - q.head
            # move to the pool's end with twice the room
            cap = q.cap * 2 if q.cap >= 4 else 4
            off = <int32_t>self._wq.size()
            se_grow(self._wq, cap, 4)
            self._wq.resize(off + cap)
            if live:
                memcpy(self._wq.data() + off, self._wq.data() + q.off + q.head,
                       live * sizeof(WlEntry))
            self._wq_dead += q.cap
            q.off = off
            q.cap = cap
        q.head = 0
        q.len = live
    ent.req = r
    ent.patient = p
    ent.account = a
    self._wq[q.off + q.len] = ent
    q.len += 1
    self._wq_live += 1
    self._wl_open[sid] += 1


# -- requests --------------------------------------------------------------------

cdef int32_t wl_new_request(Core self, int32_t a, int32_t p, int32_t c, int32_t klass,
                            const int32_t* cands, int32_t n, int64_t t,
                            int64_t deadline) noexcept nogil:
    """A new OPEN request on every candidate's class FIFO; pushes WL_EXPIRE.  O(n)."""
    cdef int32_t r = <int32_t>self._requests.size(), i
    cdef Request rq
    cdef RequestCold rc
    memset(&rq, 0, sizeof(Request))
    rc.created_at = t
    rc.deadline = deadline
    rq.changed_at = t
    for i in range(n):
        rq.cand[i] = cands[i]
    for i in range(n, WL_MAX_CAND):
        rq.cand[i] = -1
    rq.account = a
    rq.patient = p
    rq.booking = -1
    rq.filled_session = -1
    rc.p_next = self._p_rq[p]
    rc.a_next = self._a_rq[a]
    rq.skip_reason = 0
    rq.channel = <uint8_t>c
    rq.klass = <uint8_t>klass
    rq.state = RQ_OPEN
    rq.n_cand = <uint8_t>n
    self._p_rq[p] = r
    self._a_rq[a] = r
    self._patients[p].wl = 1
    se_grow(self._requests, 1, 4)
    self._requests.push_back(rq)
    se_grow(self._rq_cold, 1, 4)
    self._rq_cold.push_back(rc)
    if <size_t>(r >> 6) >= self._rq_open.size():
        se_grow(self._rq_open, 1, 4)
        self._rq_open.push_back(0)
    self._rq_open[r >> 6] |= (<uint64_t>1) << (r & 63)
    if self._cover:
        cr_push_rcover(self)
    for i in range(n):
        wl_enqueue(self, cands[i], klass, r, p, a)
    self._n_open += 1
    self._push_timer(deadline, T_WL_EXPIRE, r)
    return r


cdef void wl_close(Core self, int32_t r) noexcept nogil:
    """Close request r (already FILLED/EXPIRED/CANCELLED): open[s] -= 1 for its
    candidates.  O(candidates); its list and queue entries go lazily."""
    cdef const Request* rq = &self._requests[r]
    cdef int32_t i
    for i in range(rq.n_cand):
        self._wl_open[rq.cand[i]] -= 1
    self._rq_open[r >> 6] &= ~((<uint64_t>1) << (r & 63))
    self._n_open -= 1
    if self._cover:
        cr_release_request(self, r)     # a fill took its part already


cdef inline bint wl_is_open(Core self, int32_t r) noexcept nogil:
    return (self._rq_open[r >> 6] >> (r & 63)) & 1


cdef inline void wl_prefetch(Core self, int32_t sid) noexcept nogil:
    """Prefetch the first FIFO entry a pass of sid would read (a slot is about to be freed)."""
    cdef const WlSession* w
    cdef int32_t bi, cl
    if self._wl_of.size() == 0:
        return
    bi = self._wl_of[sid]
    if bi < 0 or self._wl_open[sid] == 0:
        return
    se_prefetch(&self._release[<int64_t>sid * self._n_ch])   # the fill's quota choice
    w = &self._wls[bi]
    for cl in range(self._wl_classes + 1):
        if w.q[cl].head < w.q[cl].len:
            se_prefetch(self._wq.data() + w.q[cl].off + w.q[cl].head)
            return


cdef void wl_open_list(Core self, int32_t key, bint by_account) noexcept nogil:
    """The OPEN requests of a patient (or an account) into Core._rq_scratch, newest
    first; closed ones met on the way leave the list.  O(list length)."""
    cdef int32_t* head = &self._a_rq[key] if by_account else &self._p_rq[key]
    cdef int32_t* link = head
    cdef int32_t r
    cdef RequestCold* rc
    self._rq_scratch.clear()
    r = link[0]
    while r >= 0:
        rc = &self._rq_cold[r]
        if self._requests[r].state == RQ_OPEN:
            self._rq_scratch.push_back(r)
            link = &rc.a_next if by_account else &rc.p_next
        else:
            link[0] = rc.a_next if by_account else rc.p_next
            if by_account:
                rc.a_next = -1
            else:
                rc.p_next = -1
        r = link[0]
    if not by_account and head[0] < 0:
        self._patients[key].wl = 0


cdef void wl_expire(Core self, int32_t r, int64_t due) noexcept nogil:
    """WL_EXPIRE(r): an OPEN request expires (event WAITLIST_EXPIRED); else stale."""
    cdef Request* rq = &self._requests[r]
    if rq.state != RQ_OPEN:
        return
    rq.state = RQ_EXPIRED
    rq.changed_at = due
    wl_close(self, r)
    rq = &self._requests[r]
    self._event(E_WAITLIST_EXPIRED, due, -1, -1, rq.patient, rq.account, r)


# -- eligibility of a request for a session (the fill check) ----------------------

cdef int wl_reason(Core self, const Request* rq, int32_t a, int32_t p, int32_t sid,
                   const Session* s, int64_t t) noexcept nogil:
    """0 if rq (of account a, patient p) may be filled into s at t, else its skip reason."""
    cdef int32_t c
    cdef int64_t base = <int64_t>sid * self._n_ch
    cdef const Account* ac
    cdef int code
    if s.flags & SF_SUSPENDED:
        return R_SESSION_SUSPENDED
    if s.flags & SF_CLOSED or t >= s.end_at:
        return R_SESSION_CLOSED
    if self._n_marks:
        ac = &self._accts[a]
        if t < ac.blocked_until or (self._n_pmarks and t < self._pmarks[p].blocked_until):
            return R_BLOCKED
        if t < ac.flag_until or (self._n_pmarks and t < self._pmarks[p].flag_until):
            return R_FLAGGED
    code = self._eligible(a, p, sid, s, t)
    if code:
        return code >> 8
    c = rq.channel
    if t >= self._release[base + c] and self._q_left[base + c] > 0:
        return 0
    if t >= self._release[base + self._pub] and self._q_left[base + self._pub] > 0:
        return 0
    return R_QUOTA_EXHAUSTED


cdef int64_t wl_clear_time(Core self, const Request* rq, int reason, int32_t sid,
                           int64_t t) noexcept nogil:
    """The earliest time the skip reason could go away by the clock alone (WL_INF: never)."""
    cdef int32_t a = rq.account, p = rq.patient, b, k, n
    cdef int64_t m = WL_INF, v, base
    cdef const Account* ac
    cdef const Mark* pm
    cdef const Booking* bk
    if reason == R_BLOCKED or reason == R_FLAGGED:
        ac = &self._accts[a]
        pm = &self._pmarks[p]
        m = -1
        v = ac.blocked_until if reason == R_BLOCKED else ac.flag_until
        if t < v:
            m = v
        v = pm.blocked_until if reason == R_BLOCKED else pm.flag_until
        if t < v and v > m:
            m = v
        return m if m >= 0 else WL_INF
    if reason == R_PATIENT_BANNED:
        return self._patients[p].banned_until
    if reason == R_PATIENT_LIMIT:
        for k in range(<int32_t>self._lim_count.size()):
            n = 0
            m = WL_INF
            b = self._patients[p].hist
            while b >= 0:
                bk = &self._bookings[b]
                if bk.created_at <= t - self._lim_window[k]:
                    break
                if bk.state <= B_NO_SHOW:
                    n += 1
                    m = bk.created_at + self._lim_window[k]   # newest first: the last is smallest
                b = bk.p_prev
            if n >= self._lim_count[k]:
                return m
        return WL_INF
    if reason == R_ACCOUNT_PATIENT_LIMIT:
        b = self._acct_hist[a]
        while b >= 0:
            bk = &self._bookings[b]
            if bk.created_at <= t - self._acct_window:
                break
            m = bk.created_at + self._acct_window
            b = bk.a_prev
        return m
    if reason == R_QUOTA_EXHAUSTED:
        base = <int64_t>sid * self._n_ch
        v = self._release[base + rq.channel]
        if v > t:
            m = v
        v = self._release[base + self._pub]
        if v > t and v < m:
            m = v
        return m
    return WL_INF


# -- taking a slot: fill and move ---------------------------------------------------

cdef int32_t wl_take_slot(Core self, int32_t a, int32_t p, int32_t sid, int32_t c, int32_t q,
                          int64_t t) noexcept nogil:
    """A new BOOKED booking on the session's lowest FREE slot, drawing quota q.  O(1)."""
    cdef Session* s = &self._sessions[sid]
    cdef Patient* pt = &self._patients[p]
    cdef int32_t idx = bm_lowest(self._bm(s), bm_words(s.capacity))
    cdef int32_t bid = <int32_t>self._bookings.size()
    cdef Booking nb
    self._q_left[<int64_t>sid * self._n_ch + q] -= 1
    nb.created_at = t
    nb.changed_at = t
    nb.session = sid
    nb.patient = p
    nb.account = a
    nb.p_prev = pt.hist
    nb.a_prev = self._acct_hist[a]
    nb.live_next = pt.live
    nb.slot = <uint16_t>idx
    nb.state = B_BOOKED
    nb.channel = <uint8_t>c
    nb.quota = <uint8_t>q
    nb.flags = 0
    se_grow(self._bookings, 1, 4)
    self._bookings.push_back(nb)
    pt.hist = bid
    pt.live = bid
    self._acct_hist[a] = bid
    self._slot_put(s, idx, bid)
    if self._money:
        cr_put_cover(self, bid, 0, 0)
    return bid


cdef void wl_fill(Core self, int32_t r, int32_t sid, int64_t t) noexcept nogil:
    """Fill OPEN request r into s at t (it was found eligible): book, close, event, signal."""
    cdef Request* rq = &self._requests[r]
    cdef int32_t a = rq.account, p = rq.patient, c = rq.channel, q, bid
    cdef int64_t base = <int64_t>sid * self._n_ch
    cdef FilledRec fr
    if t >= self._release[base + c] and self._q_left[base + c] > 0:
        q = c
    else:
        q = self._pub
    bid = wl_take_slot(self, a, p, sid, c, q, t)
    if self._cover:
        cr_fill(self, r, bid)
    rq = &self._requests[r]
    rq.state = RQ_FILLED
    rq.booking = bid
    rq.filled_session = sid
    rq.changed_at = t
    wl_close(self, r)
    self._event(E_WAITLIST_FILLED, t, sid, bid, p, a, r)
    fr.booking = bid
    fr.request = r
    se_grow(self._filled, 1, 4)
    self._filled.push_back(fr)
    if self._pflag_count > 0:
        self._many_patients(a, t)


# -- the pass ------------------------------------------------------------------------

cdef void wl_pass(Core self, int32_t sid, int64_t t) noexcept nogil:
    """Backfill session sid at t: fill eligible OPEN requests, class 0 first, FIFO
    within a class, while a FREE slot is left; note new skip reasons; schedule a
    WL_RECHECK at the earliest clear time of the skipped ones.

    O(1) without OPEN requests for the session; else O(entries walked), each
    with one eligibility check (dropped entries of closed requests are O(1)).
    """
    cdef WlSession* w
    cdef WlQueue* q
    cdef const Session* s
    cdef Request* rq
    cdef WlEntry* base
    cdef const WlEntry* ent
    cdef int32_t bi, cl, r, i, end, k, j
    cdef int reason
    cdef int64_t T = WL_INF, ct
    cdef bint skipped = False, stop = False
    if self._n_open == 0 or self._wl_of.size() == 0:
        return
    bi = self._wl_of[sid]
    if bi < 0 or self._wl_open[sid] == 0:
        return
    s = &self._sessions[sid]
    if s.flags & (SF_SUSPENDED | SF_CLOSED) or t >= s.end_at:
        return
    if not self._has_free(s):
        return
    # The pool does not move during a pass (only joins and suspensions append).
    for cl in range(self._wl_classes + 1):
        q = &self._wls[bi].q[cl]
        if q.head == q.len:
            continue
        base = self._wq.data() + q.off
        i = q.head
        end = q.len
        self._wq_keep.clear()
        while i < end:
            if self._wl_open[sid] == 0 or not self._has_free(s):
                stop = True     # nothing more to fill (or nobody left): no recheck needed
                break
            ent = &base[i]
            r = ent.req
            if wl_is_open(self, r):
                # the fill check reads these three: let their misses overlap
                se_prefetch(&self._requests[r])
                se_prefetch(&self._patients[ent.patient])
                se_prefetch(&self._acct_hist[ent.account])
                rq = &self._requests[r]
                reason = wl_reason(self, rq, ent.account, ent.patient, sid, s, t)
                if reason:
                    if reason != rq.skip_reason:
                        rq.skip_reason = <int16_t>reason
                        self._event_r(E_WAITLIST_SKIPPED, t, sid, -1, rq.patient, rq.account,
                                      r, 0, reason)
                    ct = wl_clear_time(self, &self._requests[r], reason, sid, t)
                    if ct < T:
                        T = ct
                    skipped = True
                    self._wq_keep.push_back(ent[0])    # keeps its place
                    i += 1
                    continue
                wl_fill(self, r, sid, t)
            i += 1      # dropped: its request is closed (now or earlier)
        # The walked range [head, i) shrinks to the kept entries, in order, just
        # before the unwalked rest.
        k = <int32_t>self._wq_keep.size()
        for j in range(k):
            base[i - k + j] = self._wq_keep[j]
        q = &self._wls[bi].q[cl]
        self._wq_live -= (i - k) - q.head      # the entries dropped by this walk
        q.head = i - k
        if q.head == q.len:
            q.head = q.len = 0
        if stop:
            return
    w = &self._wls[bi]
    if skipped and T != WL_INF and self._has_free(s) and (w.recheck_at < 0 or T < w.recheck_at):
        w.recheck_at = T
        self._push_timer(T, T_WL_RECHECK, sid)


cdef void wl_recheck_timer(Core self, int32_t sid, int64_t due) noexcept nogil:
    """WL_RECHECK(s): stale unless recheck_at[s] == due; then clear it and pass."""
    cdef WlSession* w = wl_block(self, sid)
    if w == NULL or w.recheck_at != due:
        return
    w.recheck_at = -1
    wl_pass(self, sid, due)


cdef void wl_recheck_list(Core self, int32_t key, bint by_account, int64_t t) noexcept nogil:
    """Pass every candidate of every OPEN request of a patient (or account), in request
    id order: a snapshot taken first; a request is passed if still OPEN when reached."""
    cdef int32_t i, j, n, r
    wl_open_list(self, key, by_account)
    n = <int32_t>self._rq_scratch.size()
    i = n - 1
    while i >= 0:
        r = self._rq_scratch[i]
        if self._requests[r].state == RQ_OPEN:    # a pass may have filled it meanwhile
            for j in range(self._requests[r].n_cand):
                wl_pass(self, self._requests[r].cand[j], t)
        i -= 1


cdef inline void wl_recheck_patient(Core self, int32_t p, int64_t t) noexcept nogil:
    """Recheck the patient: pass every candidate of its OPEN requests (id order)."""
    if self._n_open and self._patients[p].wl:
        wl_recheck_list(self, p, False, t)


cdef inline void wl_recheck_account(Core self, int32_t a, int64_t t) noexcept nogil:
    """Recheck the account: pass every candidate of its OPEN requests (id order)."""
    if self._n_open and self._a_rq[a] >= 0:
        wl_recheck_list(self, a, True, t)


cdef void wl_recheck_left(Core self, int64_t t) noexcept nogil:
    """Recheck the patient of each booking in Core._left, in order."""
    cdef size_t i
    for i in range(self._left.size()):
        wl_recheck_patient(self, self._bookings[self._left[i]].patient, t)


# -- freeing a slot: pass, recheck, re-release ----------------------------------------

cdef void wl_after_free(Core self, int32_t b, int64_t t) noexcept nogil:
    """Booking b's slot was just freed at t (slot FREE, quota credited): pass its session
    if open, recheck b's patient, then (open session) hide the slot (RETURNING) if it
    is still FREE and re-release is on."""
    cdef const Booking* bk = &self._bookings[b]
    cdef int32_t sid = bk.session, idx = bk.slot, p = bk.patient
    cdef Session* s = &self._sessions[sid]
    cdef bint is_open = not (s.flags & (SF_SUSPENDED | SF_CLOSED)) and t < s.end_at
    cdef int64_t delay
    cdef int32_t k
    cdef ReturnRec rec
    if is_open:
        wl_pass(self, sid, t)
    wl_recheck_patient(self, p, t)
    if is_open and self._rr_max > 0:
        s = &self._sessions[sid]
        if self._slot_bk[s.slot_off + idx] == SB_FREE:
            self._slot_put(s, idx, SB_RETURNING)
            if self._rr_min == self._rr_max:
                delay = self._rr_min
            else:
                delay = self._rr_min + <int64_t>(
                    rng_step(&self._rng) % <uint64_t>(self._rr_max - self._rr_min + 1))
            k = <int32_t>self._returns.size()
            rec.session = sid
            rec.slot = idx
            se_grow(self._returns, 1, 4)
            self._returns.push_back(rec)
            self._push_timer(t + delay, T_RERELEASE, k)


cdef void wl_rerelease(Core self, int32_t k, int64_t due) noexcept nogil:
    """RERELEASE(k): a RETURNING slot becomes FREE (SLOT_RERELEASED), then pass; else stale."""
    cdef ReturnRec rec = self._returns[k]
    cdef Session* s = &self._sessions[rec.session]
    if self._slot_bk[s.slot_off + rec.slot] != SB_RETURNING:
        return
    self._slot_put(s, rec.slot, SB_FREE)
    self._event_r(E_SLOT_RERELEASED, due, rec.session, -1, -1, -1, -1, rec.slot + 1, R_NONE)
    wl_pass(self, rec.session, due)


# -- no-show grace scan -------------------------------------------------------------------

cdef void wl_noshow_scan(Core self, int32_t sid, int64_t due) noexcept nogil:
    """NOSHOW_SCAN(s): release slot scan_k if its booking is still BOOKED, then move on."""
    cdef Session* s = &self._sessions[sid]
    cdef WlSession* w = wl_block(self, sid)
    cdef int32_t k = w.scan_k if w != NULL else 0, b, p, bi
    cdef Booking* bk
    cdef int64_t nxt
    if s.flags & (SF_SUSPENDED | SF_CLOSED) or due >= s.end_at:
        return
    b = self._slot_bk[s.slot_off + k]
    if b >= 0 and self._bookings[b].state == B_BOOKED:
        bk = &self._bookings[b]
        p = bk.patient
        bk.state = B_NO_SHOW
        bk.changed_at = due
        bk.flags |= F_RELEASED
        self._live_remove(p, b)
        self._event_r(E_NO_SHOW, due, sid, b, p, bk.account, -1, k + 1, R_SLOT_RELEASED)
        self._strike(p, due, sid, b)
        self._free_slot(b)
        self._backfill(b, due)
    bi = wl_block_need(self, sid)
    self._wls[bi].scan_k += 1
    k = self._wls[bi].scan_k
    s = &self._sessions[sid]
    nxt = s.starts_at + <int64_t>k * s.slot_ms + self._grace
    if k < s.capacity and nxt < s.end_at:
        self._push_timer(nxt, T_NOSHOW_SCAN, sid)


cdef void wl_noshow_resume(Core self, int32_t sid, int32_t old_cap) noexcept nogil:
    """add_capacity: restart a scan that ran out of slots (not out of time)."""
    cdef const Session* s = &self._sessions[sid]
    cdef WlSession* w = wl_block(self, sid)
    cdef int32_t k = w.scan_k if w != NULL else 0
    cdef int64_t nxt = s.starts_at + <int64_t>k * s.slot_ms + self._grace
    if k == old_cap and nxt < s.end_at:
        # never before the clock: bookings are created in time order
        self._push_timer(nxt if nxt > self._now else self._now, T_NOSHOW_SCAN, sid)


# -- join ---------------------------------------------------------------------------------

cdef inline bint wl_has_live(Core self, int32_t p, int32_t sid) noexcept nogil:
    """Whether the patient has a live booking in the session.  O(live bookings)."""
    cdef int32_t b = self._patients[p].live
    while b >= 0:
        if self._bookings[b].session == sid:
            return True
        b = self._bookings[b].live_next
    return False


cdef int wl_join(Core self, int32_t a, int32_t p, const int32_t* cands, int32_t n, int32_t c,
                 int32_t klass, int64_t deadline, int64_t t, int32_t* where) noexcept nogil:
    """join_waitlist after validation and timers: the packed outcome; ``where`` gets the
    session concerned (-1) of a rejection, or the new request id."""
    cdef int32_t i, sid, r, j, k, n_open_p = 0
    cdef const Session* s
    cdef const Request* rq
    cdef const WlSession* w
    cdef int64_t base, hb = 0, hc = 0
    cdef int reason
    where[0] = -1
    # 1. request
    for i in range(n):
        sid = cands[i]
        s = &self._sessions[sid]
        base = <int64_t>sid * self._n_ch
        where[0] = sid
        if s.flags & SF_SUSPENDED:
            return _code(ST_REJECTED, R_SESSION_SUSPENDED)
        if s.flags & SF_CLOSED or t >= s.end_at:
            return _code(ST_REJECTED, R_SESSION_CLOSED)
        if t < self._release[base + c] and t < self._release[base + self._pub]:
            return _code(ST_REJECTED, R_NOT_RELEASED)
    where[0] = -1
    # 2. risk: blocked keys may not join (flagged ones may; fills skip them)
    if self._n_marks:
        if t < self._accts[a].blocked_until or (
                self._n_pmarks and t < self._pmarks[p].blocked_until):
            return _code(ST_REJECTED, R_BLOCKED)
    # 3. eligibility
    if t < self._patients[p].banned_until:
        return _code(ST_REJECTED, R_PATIENT_BANNED)
    wl_open_list(self, p, False)     # the patient's OPEN requests (scratch)
    n_open_p = <int32_t>self._rq_scratch.size()
    for i in range(n):
        sid = cands[i]
        where[0] = sid
        if wl_has_live(self, p, sid):
            return _code(ST_REJECTED, R_DUPLICATE_SESSION)
        for k in range(n_open_p):
            rq = &self._requests[self._rq_scratch[k]]
            for j in range(rq.n_cand):
                if rq.cand[j] == sid:
                    return _code(ST_REJECTED, R_DUPLICATE_WAITLIST)
    where[0] = -1
    if n_open_p >= self._wl_per_patient:
        return _code(ST_REJECTED, R_WAITLIST_PATIENT_CAP)
    # 4. allocate: a candidate with room is booked, not waited for
    for i in range(n):
        sid = cands[i]
        s = &self._sessions[sid]
        base = <int64_t>sid * self._n_ch
        if self._has_free(s) and (
                (t >= self._release[base + c] and self._q_left[base + c] > 0)
                or (t >= self._release[base + self._pub] and self._q_left[base + self._pub] > 0)):
            where[0] = sid
            return _code(ST_REJECTED, R_SLOTS_LEFT)
    for i in range(n):
        w = wl_block(self, cands[i])
        if (self._wl_open[cands[i]] if w != NULL else 0) >= self._wl_session_cap:
            where[0] = cands[i]
            return _code(ST_REJECTED, R_WAITLIST_FULL)
    # 5. credit: hold the largest candidate fee
    if self._cover:
        reason = cr_join(self, p, cands, n, &hb, &hc)
        if reason:
            return _code(ST_REJECTED, reason)
    r = wl_new_request(self, a, p, c, klass, cands, n, t, deadline)
    if hb or hc:
        cr_hold_request(self, r, hb, hc)
    where[0] = r
    # A candidate may still have a FREE slot whose quota this channel cannot draw
    # from yet (a release later than now): pass it, so that the skip is noted and a
    # WL_RECHECK scheduled for the release (else the waitlist invariant would break
    # at the release with no pass to run).  Fills nothing: step 4 saw to that.
    for i in range(n):
        wl_pass(self, cands[i], t)
    return _code(ST_WAITLISTED, R_NONE)


# -- suspension ---------------------------------------------------------------------------

ctypedef pair[int64_t, int32_t] DistId   # (|starts_at - s.starts_at|, session id)


cdef int32_t wl_move_target(Core self, const vector[DistId]& group, int32_t p, int32_t c,
                            int32_t* quota) noexcept nogil:
    """The first session of ``group`` with a FREE slot, a move quota for channel c and
    no live booking of p; its move quota in ``quota``.  -1 when none."""
    cdef size_t i
    cdef int32_t j
    cdef int64_t base
    for i in range(group.size()):
        j = group[i].second
        base = <int64_t>j * self._n_ch
        if not self._has_free(&self._sessions[j]):
            continue
        if self._q_left[base + c] > 0:
            quota[0] = c
        elif self._q_left[base + self._pub] > 0:
            quota[0] = self._pub
        else:
            continue
        if wl_has_live(self, p, j):
            continue
        return j
    return -1


cdef int32_t wl_move_candidates(Core self, const vector[DistId]& group, int32_t p,
                                int32_t* out, int32_t n) noexcept nogil:
    """Append sessions of ``group`` without a live booking of p to out[n:], at most
    wl_candidates in all; returns the new count."""
    cdef size_t i
    cdef int32_t j
    for i in range(group.size()):
        if n >= self._wl_candidates:
            break
        j = group[i].second
        if not wl_has_live(self, p, j):
            out[n] = j
            n += 1
    return n


cdef int64_t wl_suspend(Core self, int32_t sid, int64_t t) noexcept nogil:
    """suspend(s) at t (s not suspended yet): every HELD/BOOKED booking leaves s (cancelled,
    or with suspend_action moved or waitlisted), every slot not ARRIVED/NO_SHOW is
    CANCELLED, quotas 0; then the patients of those bookings are rechecked.

    O(capacity), plus O(sessions log sessions) once if a booking is moved or waitlisted.
    """
    cdef Session* s = &self._sessions[sid]
    cdef Booking* bk
    cdef int32_t i, b, p, a, c, j, n, target, q, nb, r, doctor
    cdef int64_t affected = 0, dist, dl
    cdef bint built = False, was_booked
    cdef vector[DistId] g1, g2
    cdef const Session* o
    cdef int32_t cands[8]
    self._left.clear()
    for i in range(s.capacity):
        s = &self._sessions[sid]
        b = self._slot_bk[s.slot_off + i]
        if b < 0:
            self._slot_put(s, i, SB_CANCELLED)
            continue
        bk = &self._bookings[b]
        if bk.state != B_HELD and bk.state != B_BOOKED:
            continue
        was_booked = bk.state == B_BOOKED
        p = bk.patient
        a = bk.account
        c = bk.channel
        bk.state = B_CANCELLED
        bk.changed_at = t
        bk.flags |= F_SUSPENDED
        self._live_remove(p, b)
        self._slot_put(s, i, SB_CANCELLED)
        affected += 1
        self._left.push_back(b)
        if self._suspend_action == 0 or not was_booked:
            if self._money:
                cr_release_booking(self, b)
            self._event_r(E_BOOKING_CANCELLED, t, sid, b, p, a, R_SESSION_SUSPENDED, i + 1,
                          R_SESSION_SUSPENDED)
            continue
        if not built:
            # the other open sessions of the same doctor, else the same department,
            # each by distance in start time, then id
            built = True
            doctor = self._sx[sid].doctor
            for j in range(<int32_t>self._sessions.size()):
                if j == sid:
                    continue
                o = &self._sessions[j]
                if o.flags & (SF_SUSPENDED | SF_CLOSED) or t >= o.end_at:
                    continue
                dist = o.starts_at - s.starts_at
                if dist < 0:
                    dist = -dist
                if doctor >= 0 and self._sx[j].doctor == doctor:
                    g1.push_back(DistId(dist, j))
                elif o.department == s.department:
                    g2.push_back(DistId(dist, j))
            cpp_sort(g1.begin(), g1.end())
            cpp_sort(g2.begin(), g2.end())
        if self._suspend_action == 1:
            target = wl_move_target(self, g1, p, c, &q)
            if target < 0:
                target = wl_move_target(self, g2, p, c, &q)
            if target >= 0:
                nb = wl_take_slot(self, a, p, target, c, q, t)
                if self._money:
                    cr_move_hold(self, b, nb)
                self._event(E_BOOKING_MOVED, t, target, nb, p, a, b)
                continue
        n = wl_move_candidates(self, g1, p, cands, 0)
        n = wl_move_candidates(self, g2, p, cands, n)
        if n == 0:
            if self._money:
                cr_release_booking(self, b)
            self._event_r(E_BOOKING_CANCELLED, t, sid, b, p, a, R_SESSION_SUSPENDED, i + 1,
                          R_SESSION_SUSPENDED)
            continue
        dl = 0
        for j in range(n):
            if self._sessions[cands[j]].end_at > dl:
                dl = self._sessions[cands[j]].end_at
        r = wl_new_request(self, a, p, c, 0, cands, n, t, dl)
        if self._cover:
            cr_to_request(self, b, r)
        self._event(E_BOOKING_WAITLISTED, t, sid, b, p, a, r)
    s = &self._sessions[sid]
    for c in range(self._n_ch):
        self._q_left[<int64_t>sid * self._n_ch + c] = 0
    s.flags |= SF_SUSPENDED
    self._event(E_SESSION_SUSPENDED, t, sid, -1, -1, -1, affected)
    if self._n_open:
        wl_recheck_left(self, t)
    return affected


# -- introspection (with the GIL) ----------------------------------------------------------

cdef int64_t wl_booking_request(Core self, int32_t b) noexcept nogil:
    """The request booking b filled, -1 if none.  O(log fills): Core._filled is sorted."""
    cdef int64_t lo = 0, hi = <int64_t>self._filled.size(), mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if self._filled[mid].booking < b:
            lo = mid + 1
        else:
            hi = mid
    if lo < <int64_t>self._filled.size() and self._filled[lo].booking == b:
        return self._filled[lo].request
    return -1


cdef int64_t wl_recheck_at(Core self, int32_t sid) noexcept nogil:
    cdef const WlSession* w = wl_block(self, sid)
    return w.recheck_at if w != NULL else -1


cdef int64_t wl_scan_k(Core self, int32_t sid) noexcept nogil:
    cdef const WlSession* w = wl_block(self, sid)
    return w.scan_k if w != NULL else 0


cdef wl_check(Core self):
    """The waitlist invariants of docs/semantics.md (raises AssertionError)."""
    cdef int64_t nr = self._requests.size(), nb = self._bookings.size()
    cdef int64_t ns = self._sessions.size(), n_open = 0, n_listed
    cdef int32_t r, i, j, sid, e, cl, prev, p, a, k
    cdef const Request* rq
    cdef const WlSession* w
    cdef const WlQueue* q
    cdef const Session* s
    cdef vector[int64_t] cnt
    cdef const Timer* tm
    cnt.resize(ns, 0)
    filled_bookings = set()
    rechecks = set()
    pending_ids = []
    for i in range(<int32_t>self._timers.size()):
        tm = &self._timers[i]
        if tm.kind == T_WL_RECHECK:
            rechecks.add((tm.due, tm.id))
        elif tm.kind == T_RERELEASE:
            pending_ids.append(tm.id)
        elif tm.kind == T_WL_EXPIRE:
            assert 0 <= tm.id < nr, "WL_EXPIRE of a missing request"
        elif tm.kind == T_NOSHOW_SCAN or tm.kind == T_WL_RECHECK:
            assert 0 <= tm.id < ns
    assert self._wl_of.size() == 0 or <int64_t>self._wl_of.size() == ns, "block map size"
    assert self._wl_open.size() == self._wl_of.size()
    assert self._p_rq.size() == self._patients.size()
    assert self._rq_cold.size() == self._requests.size()
    assert self._a_rq.size() == self._acct_hist.size()
    for r in range(<int32_t>nr):
        rq = &self._requests[r]
        assert RQ_OPEN <= rq.state <= RQ_CANCELLED, f"request {r}: bad state"
        assert wl_is_open(self, r) == (rq.state == RQ_OPEN), f"request {r}: open bit"
        assert 1 <= rq.n_cand <= WL_MAX_CAND and rq.klass <= self._wl_classes
        assert 0 <= rq.patient < <int64_t>self._patients.size()
        assert 0 <= rq.account < <int64_t>self._acct_hist.size()
        cands = [rq.cand[i] for i in range(rq.n_cand)]
        assert len(set(cands)) == len(cands) and all(0 <= x < ns for x in cands), \
            f"request {r}: bad candidates {cands}"
        if rq.state == RQ_OPEN:
            n_open += 1
            for x in cands:
                cnt[x] += 1
            assert rq.booking == -1 and rq.filled_session == -1
        elif rq.state == RQ_FILLED:
            assert 0 <= rq.booking < nb, f"request {r}: filled with a missing booking"
            assert rq.booking not in filled_bookings, f"booking {rq.booking} filled twice"
            filled_bookings.add(rq.booking)
            assert rq.filled_session in cands
            bk = self._booking_tuple(rq.booking)
            assert (bk[0], bk[2], bk[3]) == (rq.filled_session, rq.patient, rq.account), \
                f"request {r}: its booking {rq.booking} does not match"
            assert wl_booking_request(self, rq.booking) == r, \
                f"request {r}: its booking points elsewhere"
        else:
            assert rq.booking == -1 and rq.filled_session == -1
    assert n_open == self._n_open, "open request count drifted"
    assert len(filled_bookings) == <int64_t>self._filled.size()
    for i in range(1, <int32_t>self._filled.size()):
        assert self._filled[i - 1].booking < self._filled[i].booking, "fill records unsorted"
    # the patients' and accounts' lists hold every OPEN request (and maybe closed ones)
    for by_account in (False, True):
        n_listed = 0
        for k in range(<int32_t>(self._a_rq.size() if by_account else self._p_rq.size())):
            r = self._a_rq[k] if by_account else self._p_rq[k]
            if not by_account:
                assert self._patients[k].wl == (r >= 0), f"patient {k}: wl flag"
            prev = -1
            while r >= 0:
                rq = &self._requests[r]
                assert (rq.account if by_account else rq.patient) == k, \
                    f"request list of {'account' if by_account else 'patient'} {k}: bad {r}"
                assert prev < 0 or r < prev, "request list not newest first (or a cycle)"
                if rq.state == RQ_OPEN:
                    n_listed += 1
                prev = r
                r = self._rq_cold[r].a_next if by_account else self._rq_cold[r].p_next
        assert n_listed == n_open, "request lists do not hold every OPEN request"
    # class FIFOs: every OPEN request once in its class queue of each candidate
    seen = set()
    regions = []
    n_live = 0
    for sid in range(<int32_t>ns):
        w = wl_block(self, sid)
        if w == NULL:
            assert cnt[sid] == 0, f"session {sid}: open requests but no block"
            continue
        assert self._wl_open[sid] == cnt[sid], \
            f"session {sid}: open={self._wl_open[sid]}, counted {cnt[sid]}"
        for cl in range(WL_MAX_QUEUES):
            q = &w.q[cl]
            assert 0 <= q.head <= q.len <= q.cap and q.off >= 0, f"session {sid}: bad queue"
            assert q.off + q.cap <= <int64_t>self._wq.size(), f"session {sid}: queue off the pool"
            if cl > self._wl_classes:
                assert q.len == 0
            regions.append((q.off, q.off + q.cap))
            n_live += q.len - q.head
            for e in range(q.off + q.head, q.off + q.len):
                r = self._wq[e].req
                assert 0 <= r < nr, f"session {sid}: queue entry of bad request {r}"
                rq = &self._requests[r]
                assert (self._wq[e].patient, self._wq[e].account) == (rq.patient, rq.account)
                assert rq.klass == cl and sid in [rq.cand[i] for i in range(rq.n_cand)], \
                    f"request {r} is in the wrong queue"
                assert (r, sid) not in seen, f"request {r} twice in session {sid}'s queue"
                seen.add((r, sid))
        if w.recheck_at >= 0:
            assert (w.recheck_at, sid) in rechecks, f"session {sid}: recheck_at without its timer"
    for r in range(<int32_t>nr):
        rq = &self._requests[r]
        if rq.state == RQ_OPEN:
            for i in range(rq.n_cand):
                assert (r, rq.cand[i]) in seen, f"request {r} missing from session {rq.cand[i]}"
    regions = sorted(x for x in regions if x[1] > x[0])
    for x in range(1, len(regions)):
        assert regions[x - 1][1] <= regions[x][0], "queue regions overlap"
    assert sum(b - a for a, b in regions) + self._wq_dead == <int64_t>self._wq.size(), \
        "queue pool does not add up"
    assert n_live == self._wq_live, "live queue entry count drifted"
    # RETURNING slots each wait for a pending RERELEASE record
    for x in pending_ids:
        assert 0 <= x < <int64_t>self._returns.size()
    pending = {(self._returns[x].session, self._returns[x].slot) for x in pending_ids}
    for sid in range(<int32_t>ns):
        s = &self._sessions[sid]
        for i in range(s.capacity):
            if self._slot_bk[s.slot_off + i] == SB_RETURNING:
                assert (sid, i) in pending, f"session {sid} slot {i + 1}: RETURNING with no record"
    # the waitlist invariant: no open session has a FREE slot an OPEN request may take
    for r in range(<int32_t>nr):
        rq = &self._requests[r]
        if rq.state != RQ_OPEN:
            continue
        for i in range(rq.n_cand):
            sid = rq.cand[i]
            s = &self._sessions[sid]
            if s.flags & (SF_SUSPENDED | SF_CLOSED) or self._now >= s.end_at:
                continue
            if not self._has_free(s):
                continue
            assert wl_reason(self, rq, rq.account, rq.patient, sid, s, self._now) != 0, \
                f"session {sid} has a FREE slot that OPEN request {r} may take"
