# Credit lines and prepaid balances (先看病后付费, 储值; included at the end of
# _core.pyx; docs/semantics.md, issue 5).
#
# Layout:
#
# * wallets: one 64-byte, cache-line-aligned Wallet per patient in
#   Core._wallets, allocated on the first money command (or at
#   ensure_patients when cover is on), and kept sized to the patients from
#   then on; beside it a 16-byte Purse per patient in Core._purses: the free
#   balance (balance - bal_held) and the free credit (limit - used - held,
#   kept whatever the line's state), with Patient.line_open mirroring
#   Wallet.state == OPEN.  A booking's cover check and hold read and write
#   only the purse (four a cache line) and the patient's line, never the
#   wallet; bal_held and held are derived from the purse (cr_bal_held,
#   cr_held), so every change of balance, limit or used moves the purse too.
# * covers: Core._bcover (16 B per booking) parallel to the bookings once
#   Core._money is set (cover on, or the first settle), so bookings stay 48 B
#   while money is never used.  It runs ahead of the bookings (grown by a
#   quarter, left unset: every booking writes its cover when it is made, a
#   zero cover meaning "holds nothing"), so that booking writes its hold
#   with one compare and two stores; Core._rcover (16 B per request) parallel to the
#   requests with cover on.  A settled booking (F_SETTLED) keeps the amount
#   charged in its cover's hb: a charge ends the hold, so the field is free.
# * bills: 56-byte records in Core._bills; each patient's bills are linked in
#   id order (Wallet.bill_first .. bill_last).  Bills are repaid oldest first,
#   so the unpaid ones are the suffix from Wallet.bill_unpaid: a repayment
#   never walks a paid bill.
# * the ledger: 40-byte movements in Core._moves (seq = index).
#
# Holds move no money: holding and releasing only adjust the purse and the
# cover record.  Charges, top-ups, repayments and refunds append
# a movement stamped with Core._ncmd, the number of the running command.


# -- wallets and covers ------------------------------------------------------------

cdef void cr_wallets_need(Core self) noexcept nogil:
    """Size the wallets to the patients (all zero, no bills).  O(new patients)."""
    cdef Wallet blank
    cdef Purse empty
    if self._wallets.size() >= self._patients.size():
        return
    memset(&blank, 0, sizeof(Wallet))
    blank.bill_first = -1
    blank.bill_unpaid = -1
    blank.bill_last = -1
    self._wallets.resize(self._patients.size(), blank)
    empty.free = 0
    empty.room = 0
    self._purses.resize(self._patients.size(), empty)


cdef inline int64_t cr_bal_held(Core self, int32_t p) noexcept nogil:
    """Wallet bal_held: the held part of the balance."""
    return self._wallets[p].balance - self._purses[p].free


cdef inline int64_t cr_held(Core self, int32_t p) noexcept nogil:
    """Wallet held: held on the line, not billed yet."""
    cdef const Wallet* w = &self._wallets[p]
    return w.limit - w.used - self._purses[p].room


cdef inline void cr_unhold(Core self, int32_t p, int64_t hb, int64_t hc) noexcept nogil:
    """Release (hb, hc) of the patient's holds (negative: hold more)."""
    cdef Purse* pu = &self._purses[p]
    pu.free += hb
    pu.room += hc


cdef inline void cr_set_state(Core self, int32_t p, uint8_t state) noexcept nogil:
    """The line's state, and its OPEN bit in the patient's record."""
    self._wallets[p].state = state
    self._patients[p].line_open = state == LS_OPEN


cdef void cr_covers_need(Core self) noexcept nogil:
    """Keep a cover record per booking from now on (Core._money).  O(bookings) once."""
    cdef Cover blank
    if self._money:
        return
    blank.hb = 0
    blank.hc = 0
    self._bcover.assign(self._bookings.size(), blank)
    self._money = True


cdef void cr_covers_grow(Core self, size_t need) noexcept nogil:
    """Covers for every booking id < need, and a quarter more: the new ones unset
    (se_noinit), as each is written when its booking is made (cr_put_cover)."""
    cdef size_t n = need + need // 4 + 64
    self._bcover.reserve(n)     # exactly: resize alone would double the capacity
    self._bcover.resize(n)


cdef inline int cr_cover(Core self, int32_t p, int64_t x, int64_t* fb,
                         int64_t* fc) noexcept nogil:
    """Cover x > 0: the free balance first, then the free credit.  0, or the Reason.
    Reads the purse and the patient's line; the wallet only to say why not."""
    cdef const Purse* pu = &self._purses[p]
    cdef int64_t free_b = pu.free
    cdef int64_t free_c = pu.room if self._patients[p].line_open else 0
    fb[0] = x if x < free_b else free_b
    fc[0] = x - fb[0]
    if fc[0] > free_c:
        return R_CREDIT_SUSPENDED if self._wallets[p].state == LS_SUSPENDED else R_NO_COVER
    return 0


cdef inline void cr_put_cover(Core self, int32_t b, int64_t hb, int64_t hc) noexcept nogil:
    """The hold of new booking b (only with Core._money)."""
    cdef Cover* cv
    if <size_t>b >= self._bcover.size():
        cr_covers_grow(self, b + 1)
    cv = &self._bcover[b]
    cv.hb = hb
    cv.hc = hc


cdef inline void cr_release_booking(Core self, int32_t b) noexcept nogil:
    """Booking b ended other than by arrival: its hold goes back (only with Core._money)."""
    cdef Cover* cv = &self._bcover[b]
    if cv.hb == 0 and cv.hc == 0:
        return
    cr_unhold(self, self._bookings[b].patient, cv.hb, cv.hc)
    cv.hb = 0
    cv.hc = 0


cdef inline void cr_keep(Core self, int32_t p, int64_t* hb, int64_t* hc,
                         int64_t amount) noexcept nogil:
    """Of the hold (hb, hc) keep min(total, amount), balance part first; release the rest."""
    cdef int64_t kb, kc
    if amount > hb[0] + hc[0]:
        amount = hb[0] + hc[0]
    kb = hb[0] if hb[0] < amount else amount
    kc = amount - kb
    cr_unhold(self, p, hb[0] - kb, hc[0] - kc)
    hb[0] = kb
    hc[0] = kc


cdef void cr_move_hold(Core self, int32_t b, int32_t nb) noexcept nogil:
    """A suspension moved booking b to nb: nb holds min(b's total, its fee) of b's hold."""
    cdef Cover* cv = &self._bcover[b]
    cdef int64_t hb = cv.hb, hc = cv.hc
    if hb == 0 and hc == 0:
        return
    cr_keep(self, self._bookings[b].patient, &hb, &hc,
            self._sessions[self._bookings[nb].session].fee)
    cv.hb = 0
    cv.hc = 0
    cv = &self._bcover[nb]
    cv.hb = hb
    cv.hc = hc


cdef void cr_to_request(Core self, int32_t b, int32_t r) noexcept nogil:
    """A suspension waitlisted booking b as request r: the hold passes whole (cover on)."""
    cdef Cover* cv = &self._bcover[b]
    cdef Cover* rc = &self._rcover[r]
    rc.hb = cv.hb
    rc.hc = cv.hc
    cv.hb = 0
    cv.hc = 0


cdef inline void cr_push_rcover(Core self) noexcept nogil:
    """The (empty) hold of the request just appended (only with cover on)."""
    cdef Cover rc
    rc.hb = 0
    rc.hc = 0
    se_grow(self._rcover, 1, 4)
    self._rcover.push_back(rc)


cdef inline void cr_release_request(Core self, int32_t r) noexcept nogil:
    """Request r closed: what it still holds goes back (only with cover on)."""
    cdef Cover* rc = &self._rcover[r]
    if rc.hb == 0 and rc.hc == 0:
        return
    cr_unhold(self, self._requests[r].patient, rc.hb, rc.hc)
    rc.hb = 0
    rc.hc = 0


cdef void cr_fill(Core self, int32_t r, int32_t b) noexcept nogil:
    """Request r filled as booking b: b holds min(r's total, the fee) of r's hold, balance
    part first; the rest is released (r's hold becomes (0, 0))."""
    cdef Cover* rc = &self._rcover[r]
    cdef Cover* cv
    cdef int64_t hb = rc.hb, hc = rc.hc
    if hb == 0 and hc == 0:
        return
    cr_keep(self, self._requests[r].patient, &hb, &hc,
            self._sessions[self._bookings[b].session].fee)
    rc.hb = 0
    rc.hc = 0
    cv = &self._bcover[b]
    cv.hb = hb
    cv.hc = hc


cdef int cr_join(Core self, int32_t p, const int32_t* cands, int32_t n, int64_t* hb,
                 int64_t* hc) noexcept nogil:
    """join_waitlist's credit stage (cover on): cover the largest candidate fee.  0 or the
    Reason; the split in (hb, hc), (0, 0) when every fee is 0."""
    cdef int64_t f = 0
    cdef int32_t i
    hb[0] = 0
    hc[0] = 0
    for i in range(n):
        if self._sessions[cands[i]].fee > f:
            f = self._sessions[cands[i]].fee
    if f == 0:
        return 0
    return cr_cover(self, p, f, hb, hc)


cdef void cr_hold_request(Core self, int32_t r, int64_t hb, int64_t hc) noexcept nogil:
    cr_unhold(self, self._requests[r].patient, -hb, -hc)
    self._rcover[r].hb = hb
    self._rcover[r].hc = hc


# -- the ledger, bills, limits ------------------------------------------------------

cdef void cr_record(Core self, int32_t p, int src, int dst, int64_t amount, int kind,
                    int32_t b, int32_t bill, int64_t t) noexcept nogil:
    """Append a movement of amount > 0 from src to dst, stamped with the command's ncmd."""
    cdef Move mv
    mv.ncmd = self._ncmd
    mv.at = t
    mv.amount = amount
    mv.patient = p
    mv.booking = b
    mv.bill = bill
    mv.source = <uint8_t>src
    mv.target = <uint8_t>dst
    mv.kind = <uint8_t>kind
    se_grow(self._moves, 1, 4)
    self._moves.push_back(mv)


cdef inline void cr_bill_event(Core self, int kind, int32_t k, int64_t t) noexcept nogil:
    """A bill event: the bill's booking, its session and slot, patient and account."""
    cdef const Bill* bl = &self._bills[k]
    cdef const Booking* bk = &self._bookings[bl.booking]
    self._event(kind, t, bk.session, bl.booking, bl.patient, bk.account, k)


cdef inline void cr_line_event(Core self, int kind, int32_t p, int64_t t,
                               int64_t detail) noexcept nogil:
    """A line event carries only the patient."""
    self._event(kind, t, -1, -1, p, -1, detail)


cdef int32_t cr_new_bill(Core self, int32_t b, int64_t amount, int64_t t) noexcept nogil:
    """Bill booking b's patient amount at t: event BILLED, timers BILL_NOTICE, BILL_DUE."""
    cdef int32_t k = <int32_t>self._bills.size()
    cdef int32_t p = self._bookings[b].patient
    cdef Wallet* w = &self._wallets[p]
    cdef Bill bl
    bl.amount = amount
    bl.paid = 0
    bl.created_at = t
    bl.due_at = t + self._bill_due
    bl.paid_at = -1
    bl.patient = p
    bl.booking = b
    bl.next = -1
    bl.state = BS_OPEN
    se_grow(self._bills, 1, 4)
    self._bills.push_back(bl)
    if w.bill_last >= 0:
        self._bills[w.bill_last].next = k
    else:
        w.bill_first = k
    w.bill_last = k
    if w.bill_unpaid < 0:
        w.bill_unpaid = k
    cr_bill_event(self, E_BILLED, k, t)
    if self._bill_notice > 0:
        self._push_timer(bl.due_at - self._bill_notice, T_BILL_NOTICE, k)
    self._push_timer(bl.due_at, T_BILL_DUE, k)
    return k


cdef int cr_charge(Core self, int32_t b, int64_t x, int64_t t, int64_t* xb_out,
                   int64_t* xc_out, int32_t* bill_out) noexcept nogil:
    """Charge booking b x at t: its hold and the free balance first, then its credit hold
    and the free credit; the credit part is billed.  0, or the Reason (nothing changes)."""
    cdef int32_t p = self._bookings[b].patient
    cdef Wallet* w = &self._wallets[p]
    cdef Purse* pu = &self._purses[p]
    cdef Cover* cv = &self._bcover[b]
    cdef int64_t ub = pu.free + cv.hb
    cdef int64_t uc = cv.hc + (pu.room if w.state == LS_OPEN else 0)
    cdef int64_t xb = x if x < ub else ub
    cdef int64_t xc = x - xb
    xb_out[0] = xb
    xc_out[0] = xc
    bill_out[0] = -1
    if xc > uc:
        return R_CREDIT_SUSPENDED if w.state == LS_SUSPENDED else R_NO_COVER
    # release the hold, then take xb off the balance and xc onto used
    pu.free += cv.hb - xb
    pu.room += cv.hc - xc
    cv.hb = x           # settled: the amount charged (see Cover)
    cv.hc = 0
    self._bookings[b].flags |= F_SETTLED
    if xb > 0:
        w.balance -= xb
        cr_record(self, p, LA_BALANCE, LA_HOSPITAL, xb, MK_PAY_BALANCE, b, -1, t)
    if xc > 0:
        w.used += xc        # (the purse's room took it above)
        bill_out[0] = <int32_t>self._bills.size()
        cr_record(self, p, LA_CREDIT, LA_HOSPITAL, xc, MK_PAY_CREDIT, b, bill_out[0], t)
        cr_new_bill(self, b, xc, t)
    return 0


cdef inline const int64_t* cr_terms(Core self, const Wallet* w) noexcept nogil:
    """(start, floor, ceiling, step) of the line's kind."""
    return self._terms + 4 * (w.kind - 1 if w.kind >= 1 else 0)


cdef void cr_set_limit(Core self, int32_t p, int64_t new, int64_t t) noexcept nogil:
    """limit = new; event LIMIT_CHANGED if it changed."""
    cdef Wallet* w = &self._wallets[p]
    if new != w.limit:
        self._purses[p].room += new - w.limit
        w.limit = new
        cr_line_event(self, E_LIMIT_CHANGED, p, t, new)


cdef void cr_raise(Core self, int32_t p, int64_t t) noexcept nogil:
    """Raise the limit a step, not above the kind's ceiling; never lower it (a host
    may have set it above the ceiling), so it stays >= used + held."""
    cdef const Wallet* w = &self._wallets[p]
    cdef const int64_t* tm = cr_terms(self, w)
    cdef int64_t new = w.limit + tm[3]
    if new > tm[2]:
        new = tm[2]
    if new < w.limit:
        new = w.limit
    cr_set_limit(self, p, new, t)


cdef void cr_cut(Core self, int32_t p, int64_t t) noexcept nogil:
    """Cut the limit a step, not below the kind's floor nor used + held; never raise
    it (a host may have set it below the floor)."""
    cdef const Wallet* w = &self._wallets[p]
    cdef const int64_t* tm = cr_terms(self, w)
    cdef int64_t new = w.limit - tm[3]
    if new < tm[1]:
        new = tm[1]
    if new > w.limit:
        new = w.limit
    if new < w.limit - self._purses[p].room:     # used + held
        new = w.limit - self._purses[p].room
    cr_set_limit(self, p, new, t)


cdef void cr_bill_notice(Core self, int32_t k, int64_t due) noexcept nogil:
    """BILL_NOTICE(k): BILL_DUE_SOON unless the bill is paid."""
    if self._bills[k].state != BS_PAID:
        cr_bill_event(self, E_BILL_DUE_SOON, k, due)


cdef void cr_bill_due(Core self, int32_t k, int64_t due) noexcept nogil:
    """BILL_DUE(k): an OPEN bill is OVERDUE; cut the limit, suspend an OPEN line."""
    cdef Bill* bl = &self._bills[k]
    cdef int32_t p = bl.patient
    cdef Wallet* w
    if bl.state != BS_OPEN:
        return
    bl.state = BS_OVERDUE
    w = &self._wallets[p]
    w.n_overdue += 1
    w.streak = 0
    cr_bill_event(self, E_BILL_OVERDUE, k, due)
    cr_cut(self, p, due)
    w = &self._wallets[p]
    if w.state == LS_OPEN:
        cr_set_state(self, p, LS_SUSPENDED)
        cr_line_event(self, E_CREDIT_SUSPENDED, p, due, k)


cdef int64_t cr_repay(Core self, int32_t p, int64_t amount, int64_t t) noexcept nogil:
    """Repay amount (<= used) on the patient's unpaid bills, oldest first; returns the
    count paid in full.  O(bills paid + 1)."""
    cdef Wallet* w = &self._wallets[p]
    cdef Bill* bl
    cdef int32_t k = w.bill_unpaid
    cdef int64_t rest = amount, x, n = 0
    cdef uint8_t was
    while rest > 0 and k >= 0:
        bl = &self._bills[k]
        x = bl.amount - bl.paid
        if x > rest:
            x = rest
        bl.paid += x
        rest -= x
        w = &self._wallets[p]
        w.used -= x
        self._purses[p].room += x
        cr_record(self, p, LA_EXTERNAL, LA_CREDIT, x, MK_REPAY, -1, k, t)
        bl = &self._bills[k]
        if bl.paid == bl.amount:
            was = bl.state
            bl.state = BS_PAID
            bl.paid_at = t
            n += 1
            w.bill_unpaid = bl.next
            cr_bill_event(self, E_BILL_PAID, k, t)
            w = &self._wallets[p]
            if was == BS_OPEN:
                w.streak += 1
                if self._raise_after > 0 and w.streak >= self._raise_after:
                    w.streak = 0
                    cr_raise(self, p, t)
            else:
                w.n_overdue -= 1
                if w.n_overdue == 0 and w.state == LS_SUSPENDED:
                    cr_set_state(self, p, LS_OPEN)
                    cr_line_event(self, E_CREDIT_REINSTATED, p, t, -1)
        k = self._bills[k].next
    return n


# -- introspection (with the GIL) ----------------------------------------------------

cdef tuple cr_wallet_tuple(Core self, int32_t p):
    cdef const Wallet* w
    if <size_t>p >= self._wallets.size():
        return (0, 0, 0, 0, 0, 0, 0, 0, 0)
    w = &self._wallets[p]
    return (w.balance, cr_bal_held(self, p), w.kind, w.state, w.limit, w.used,
            cr_held(self, p), w.streak, w.n_overdue)


cdef tuple cr_cover_tuple(Core self, int32_t b):
    """(hold_balance, hold_credit, settled)."""
    cdef const Cover* cv
    if not self._money:
        return (0, 0, -1)
    cv = &self._bcover[b]
    if self._bookings[b].flags & F_SETTLED:
        return (0, 0, cv.hb)
    return (cv.hb, cv.hc, -1)


cdef tuple cr_rcover_tuple(Core self, int32_t r):
    if not self._cover:
        return (0, 0)
    return (self._rcover[r].hb, self._rcover[r].hc)


cdef tuple cr_bill_tuple(Core self, int32_t k):
    cdef const Bill* bl = &self._bills[k]
    return (bl.patient, bl.booking, bl.amount, bl.paid, bl.created_at, bl.due_at, bl.state,
            bl.paid_at)


cdef tuple cr_move_tuple(Core self, int64_t i):
    cdef const Move* mv = &self._moves[i]
    return (i, mv.ncmd, mv.at, mv.patient, mv.source, mv.target, mv.amount, mv.kind,
            mv.booking, mv.bill)


cdef list cr_patient_bills(Core self, int32_t p):
    cdef int32_t k
    out = []
    if <size_t>p >= self._wallets.size():
        return out
    k = self._wallets[p].bill_first
    while k >= 0:
        out.append(k)
        k = self._bills[k].next
    return out


cdef cr_check(Core self):
    """The ledger invariants of docs/semantics.md (raises AssertionError).  O(state)."""
    cdef int64_t np_ = self._patients.size(), nb = self._bookings.size()
    cdef int64_t nr = self._requests.size(), i, settled = 0, n_listed = 0
    cdef int32_t p, k, b, r, prev
    cdef const Wallet* w
    cdef int64_t w_bal_held, w_held
    cdef const Bill* bl
    cdef const Move* mv
    cdef const Booking* bk
    cdef vector[int64_t] bal, cred, hb, hc, unpaid, overdue
    cdef int64_t tot[4]
    cdef bint in_suffix
    assert self._wallets.size() == 0 or <int64_t>self._wallets.size() == np_, "wallets size"
    assert self._purses.size() == self._wallets.size(), "purses out of step with wallets"
    if self._wallets.size() == 0:
        for p in range(<int32_t>np_):
            assert not self._patients[p].line_open, f"patient {p}: line_open, no wallet"
    assert not self._cover or self._money, "cover on without per-booking covers"
    if self._money:
        assert <int64_t>self._bcover.size() >= nb, "booking covers out of step"
    if self._cover:
        assert <int64_t>self._rcover.size() == nr, "request covers out of step"
    for b in range(<int32_t>nb):
        if self._bookings[b].flags & F_SETTLED:
            assert self._money and self._bookings[b].state == B_ARRIVED, \
                f"booking {b}: charged but not ARRIVED"
            assert self._bcover[b].hb >= 0 and self._bcover[b].hc == 0
    if self._wallets.size() == 0:
        assert self._moves.size() == 0 and self._bills.size() == 0
        if self._money:
            for b in range(<int32_t>nb):
                assert self._bcover[b].hb == 0 and self._bcover[b].hc == 0, \
                    f"booking {b}: holds or charged without a wallet"
        if self._cover:
            for r in range(<int32_t>nr):
                assert self._rcover[r].hb == 0 and self._rcover[r].hc == 0
        return
    for k in range(4):
        tot[k] = 0
    bal.resize(np_, 0)
    cred.resize(np_, 0)
    hb.resize(np_, 0)
    hc.resize(np_, 0)
    unpaid.resize(np_, 0)
    overdue.resize(np_, 0)
    for i in range(<int64_t>self._moves.size()):
        mv = &self._moves[i]
        assert mv.amount > 0, f"movement {i}: amount {mv.amount}"
        assert 0 <= mv.patient < np_ and mv.source <= 3 and mv.target <= 3
        assert mv.source != mv.target and MK_TOP_UP <= mv.kind <= MK_REFUND
        assert 0 < mv.ncmd <= self._ncmd, f"movement {i}: ncmd {mv.ncmd}"
        assert i == 0 or mv.ncmd >= self._moves[i - 1].ncmd, "movements out of command order"
        tot[mv.source] -= mv.amount
        tot[mv.target] += mv.amount
        if mv.source == LA_BALANCE:
            bal[mv.patient] -= mv.amount
        if mv.target == LA_BALANCE:
            bal[mv.patient] += mv.amount
        if mv.source == LA_CREDIT:
            cred[mv.patient] -= mv.amount
        if mv.target == LA_CREDIT:
            cred[mv.patient] += mv.amount
    assert tot[0] + tot[1] + tot[2] + tot[3] == 0, "the ledger does not sum to zero"
    for k in range(<int32_t>self._bills.size()):
        bl = &self._bills[k]
        assert 0 <= bl.patient < np_ and 0 <= bl.booking < nb
        assert 0 < bl.amount and 0 <= bl.paid <= bl.amount, f"bill {k}: paid {bl.paid}"
        assert (bl.state == BS_PAID) == (bl.paid == bl.amount), f"bill {k}: state"
        assert (bl.paid_at >= 0) == (bl.state == BS_PAID), f"bill {k}: paid_at"
        assert bl.due_at == bl.created_at + self._bill_due
        unpaid[bl.patient] += bl.amount - bl.paid
        if bl.state == BS_OVERDUE:
            overdue[bl.patient] += 1
    for b in range(<int32_t>nb):
        bk = &self._bookings[b]
        if not self._money:
            continue
        if bk.flags & F_SETTLED:
            settled += self._bcover[b].hb
        elif self._bcover[b].hb or self._bcover[b].hc:
            assert bk.state <= B_ARRIVED, f"booking {b}: ended but still holds"
            assert self._bcover[b].hb >= 0 and self._bcover[b].hc >= 0
            hb[bk.patient] += self._bcover[b].hb
            hc[bk.patient] += self._bcover[b].hc
    if self._cover:
        for r in range(<int32_t>nr):
            if self._rcover[r].hb or self._rcover[r].hc:
                assert self._requests[r].state == RQ_OPEN, f"request {r}: closed but holds"
                assert self._rcover[r].hb >= 0 and self._rcover[r].hc >= 0
                hb[self._requests[r].patient] += self._rcover[r].hb
                hc[self._requests[r].patient] += self._rcover[r].hc
    assert tot[LA_HOSPITAL] == settled, "the hospital total is not the sum of charges"
    for p in range(<int32_t>np_):
        w = &self._wallets[p]
        assert bal[p] == w.balance, f"patient {p}: balance {w.balance}, movements {bal[p]}"
        assert cred[p] == -w.used, f"patient {p}: used {w.used}, movements {cred[p]}"
        assert unpaid[p] == w.used, f"patient {p}: used {w.used}, unpaid bills {unpaid[p]}"
        # the purse against the wallet and the holds: free = balance - bal_held,
        # room = limit - used - held, line_open = (state == OPEN)
        w_bal_held = cr_bal_held(self, p)
        w_held = cr_held(self, p)
        assert hb[p] == w_bal_held and hc[p] == w_held, \
            f"patient {p}: purse ({self._purses[p].free}, {self._purses[p].room}) says held " \
            f"({w_bal_held}, {w_held}), holds ({hb[p]}, {hc[p]})"
        assert self._patients[p].line_open == (w.state == LS_OPEN), \
            f"patient {p}: line_open {self._patients[p].line_open}, state {w.state}"
        assert 0 <= w_bal_held <= w.balance <= MAX_BALANCE, f"patient {p}: balance"
        assert 0 <= w.used and 0 <= w_held and 0 <= w.limit <= MAX_FEN
        assert w.used + w_held <= w.limit, f"patient {p}: used + held over the limit"
        assert overdue[p] == w.n_overdue, f"patient {p}: n_overdue"
        assert LS_NONE <= w.state <= LS_CLOSED and w.kind <= LK_INPATIENT
        assert (w.kind == 0) == (w.state == LS_NONE), f"patient {p}: kind {w.kind}"
        assert w.state != LS_SUSPENDED or w.n_overdue > 0, f"patient {p}: suspended, none due"
        assert 0 <= w.streak and (self._raise_after == 0 or w.streak < self._raise_after)
        # the bill list: ascending ids, this patient's, unpaid exactly from bill_unpaid on
        k = w.bill_first
        prev = -1
        in_suffix = False
        while k >= 0:
            bl = &self._bills[k]
            assert bl.patient == p and k > prev, f"patient {p}: bill list"
            if k == w.bill_unpaid:
                in_suffix = True
            assert in_suffix == (bl.state != BS_PAID), f"patient {p}: unpaid bills not a suffix"
            prev = k
            k = bl.next
            n_listed += 1
        assert prev == w.bill_last and (w.bill_unpaid < 0 or in_suffix)
    assert n_listed == <int64_t>self._bills.size(), "a bill is on no patient's list"


cdef void cr_check_in(Core self, int32_t b, int64_t t) noexcept nogil:
    """check_in with settle_at_check_in: charge what the booking holds (cannot fail);
    a booking holding nothing stays unsettled."""
    cdef const Cover* cv = &self._bcover[b]
    cdef int64_t xb, xc
    cdef int32_t bill
    if cv.hb == 0 and cv.hc == 0:
        return
    cr_charge(self, b, cv.hb + cv.hc, t, &xb, &xc, &bill)
