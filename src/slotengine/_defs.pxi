# Structs, codes and argument conversion of the compiled core (included by _core.pyx).
#
# Every struct is plain C: the whole engine state is a handful of std::vectors
# of these, so a snapshot is a few memcpys and nothing in the hot path touches
# a Python object.

cdef extern from *:
    """
    static inline int se_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    /* Prefetch the cache line at p, as an asm statement the optimizer may
       not delete.  GCC takes __builtin_prefetch for an instruction without
       effect: a helper made only of prefetches (Core._prefetch_row) is then
       "const", and its calls are dropped.  That silently removed book_many's
       row prefetches (release rush submit 0.24 s -> 0.10 s when restored). */
    static inline void se_prefetch(const void* p) {
    #if defined(__x86_64__) || defined(__i386__)
        __asm__ __volatile__("prefetcht0 %0" : : "m"(*(const char*)p));
    #else
        __builtin_prefetch(p);
    #endif
    }
    /* Allocator of the big per-id tables (bookings, patients, accounts,
       requests, queue entries): a block of 2 MB or more is 2 MB-aligned, and
       one of 8 MB or more is, on Linux, advised for transparent huge pages.
       A command reads a few rows of each at random; with 4 KB pages nearly
       every such read of a table far larger than the TLB's reach also walks
       the page tables (hundreds of MB of rows in a city-scale waitlist), and
       a prefetch waits for that walk.  A million patients' rows are 32 MB and
       their accounts' early-request rings 20 MB: the release rush's batch
       submit measured 0.099 -> 0.088 s with the threshold at 8 MB, not 32.
       Small tables stay on 4 KB pages: one that grows while a batch books
       (bookings) faults and zeroes whole 2 MB pages on every regrowth
       (book_many measured 35% slower with them).
       Smaller blocks are 64-byte aligned. */
    #include <cstdlib>
    #include <new>
    #ifdef __linux__
    #include <sys/mman.h>
    #endif
    template <class T> struct se_alloc {
        typedef T value_type;
        se_alloc() noexcept {}
        template <class U> se_alloc(const se_alloc<U>&) noexcept {}
        T* allocate(size_t n) {
            const size_t huge = (size_t)1 << 21;
            size_t bytes = n * sizeof(T);
            void* p;
            if (bytes >= huge) {
                bytes = (bytes + huge - 1) & ~(huge - 1);
                p = aligned_alloc(huge, bytes);
    #ifdef MADV_HUGEPAGE
                if (p && bytes >= ((size_t)8 << 20))
                    madvise(p, bytes, MADV_HUGEPAGE);   /* a hint: failure is fine */
    #endif
            } else {   /* 64-byte aligned: a 64-byte record is one cache line */
                p = aligned_alloc(64, bytes ? (bytes + 63) & ~(size_t)63 : 64);
            }
            if (!p) throw std::bad_alloc();
            return static_cast<T*>(p);
        }
        void deallocate(T* p, size_t) noexcept { free(p); }
    };
    /* std::allocator, but growing with resize(n) leaves new trivial elements
       uninitialised (default-, not value-initialised): for a table whose every
       element is written when its row is made (Core._bcover), so that growing
       it ahead of a batch does not write it twice. */
    template <class T> struct se_noinit : std::allocator<T> {
        template <class U> struct rebind { typedef se_noinit<U> other; };
        se_noinit() noexcept {}
        template <class U> se_noinit(const se_noinit<U>&) noexcept {}
        template <class U> void construct(U* p) noexcept { ::new((void*)p) U; }
        template <class U, class A0> void construct(U* p, A0&& a0) {
            ::new((void*)p) U(static_cast<A0&&>(a0));
        }
    };
    template <class T, class U>
    static inline bool operator==(const se_alloc<T>&, const se_alloc<U>&) { return true; }
    template <class T, class U>
    static inline bool operator!=(const se_alloc<T>&, const se_alloc<U>&) { return false; }
    /* Grow a vector's capacity by 1/8 (not 2x) when it must grow: memory per
       slot and per session stays within a few percent of the live size. */
    /* An instance of a tuple subclass with n (unset) items, as tuple.__new__
       makes one (drain_events_list); and the address of a list's item i. */
    static inline PyObject* se_tuple_alloc(PyObject* t, Py_ssize_t n) {
        return ((PyTypeObject*)t)->tp_alloc((PyTypeObject*)t, n);
    }
    static inline const void* se_list_slot(PyObject* l, Py_ssize_t i) {
        return (const void*)(((PyListObject*)l)->ob_item + i);
    }
    /* Room for extra more items, allocated and written now (value-initialized,
       then dropped again): the kernel hands over and zeroes the pages at this
       call, not at the first touches later.  Capacity only; the items are
       unchanged.  May throw bad_alloc, leaving v as it was. */
    template <class V> static inline void se_reserve_touched(V& v, size_t extra) {
        size_t n = v.size();
        if (v.capacity() - n < extra)
            v.reserve(n + extra);
        v.resize(n + extra);
        v.resize(n);
    }
    template <class V> static inline void se_grow(V& v, size_t extra, size_t div) {
        size_t need = v.size() + extra, cap = v.capacity();
        if (need > cap) {
            cap += cap / div + 16;
            v.reserve(need > cap ? need : cap);
        }
    }
    """
    void se_reserve_touched[V](V& v, size_t extra) except +
    cppclass se_alloc[T]:
        pass
    cppclass se_noinit[T]:
        pass
    int se_ctz64(unsigned long long x) noexcept nogil
    void se_prefetch(const void* p) noexcept nogil
    void se_grow[V](V& v, size_t extra, size_t div) noexcept nogil
    object se_tuple_alloc(object t, Py_ssize_t n)
    const void* se_list_slot(object l, Py_ssize_t i) noexcept


# Codes mirror slotengine.outcomes (checked against the enums at import time).
cdef enum:
    ST_BOOKED = 1
    ST_HELD = 2
    ST_QUEUED = 3
    ST_WAITLISTED = 4
    ST_REJECTED = 5
    ST_CANCELLED = 6
    ST_ARRIVED = 7

cdef enum:
    R_NONE = 0
    R_SESSION_SUSPENDED = 101
    R_SESSION_CLOSED = 102
    R_NOT_RELEASED = 103
    R_PATIENT_BANNED = 201
    R_DUPLICATE_SESSION = 202
    R_DUPLICATE_DEPARTMENT_DAY = 203
    R_PATIENT_LIMIT = 204
    R_ACCOUNT_PATIENT_LIMIT = 205
    R_FIRST_VISIT_EXPERT = 206
    R_DUPLICATE_TICKET = 207
    R_DUPLICATE_WAITLIST = 208
    R_WAITLIST_PATIENT_CAP = 209
    R_BLOCKED = 301
    R_THROTTLED = 302
    R_FLAGGED = 303
    R_FULL = 401
    R_QUOTA_EXHAUSTED = 402
    R_SLOTS_LEFT = 403
    R_WAITLIST_FULL = 404
    R_NO_COVER = 501
    R_CREDIT_SUSPENDED = 502
    R_NOT_OWNER = 601
    R_NOT_ACTIVE = 602
    R_CANCEL_CUTOFF = 603
    R_HOLD_EXPIRED = 604
    R_NOT_HELD = 605
    R_NOT_CONFIRMED = 606
    R_SLOT_RELEASED = 607

cdef enum:  # BookingState
    B_HELD = 1
    B_BOOKED = 2
    B_ARRIVED = 3
    B_NO_SHOW = 4
    B_CANCELLED = 5
    B_EXPIRED = 6

cdef enum:  # SlotState
    S_FREE = 0
    S_HELD = 1
    S_BOOKED = 2
    S_ARRIVED = 3
    S_NO_SHOW = 4
    S_CANCELLED = 5
    S_BLOCKED = 6
    S_RETURNING = 7
    N_SLOT_STATES = 8

cdef enum:  # EventKind
    E_HOLD_EXPIRED = 1
    E_QUOTA_ROLLED = 2
    E_NO_SHOW = 3
    E_PATIENT_BANNED = 4
    E_SESSION_SUSPENDED = 5
    E_BOOKING_CANCELLED = 6
    E_CAPACITY_ADDED = 7
    E_FLAGGED = 8
    E_UNFLAGGED = 9
    E_BLOCKED = 10
    E_UNBLOCKED = 11
    E_COHORT_DRAWN = 12
    E_TICKET_SERVED = 13
    E_TICKET_FAILED = 14
    E_WAITLIST_FILLED = 15
    E_WAITLIST_EXPIRED = 16
    E_WAITLIST_SKIPPED = 17
    E_BOOKING_MOVED = 18
    E_BOOKING_WAITLISTED = 19
    E_SLOT_RERELEASED = 20
    E_BILLED = 21
    E_BILL_DUE_SOON = 22
    E_BILL_OVERDUE = 23
    E_BILL_PAID = 24
    E_CREDIT_SUSPENDED = 25
    E_CREDIT_REINSTATED = 26
    E_LIMIT_CHANGED = 27

cdef enum:  # timer kinds, as in dump()['timers']
    T_HOLD_EXPIRE = 1
    T_ROLLOVER = 2
    T_SESSION_END = 3
    T_COHORT_CLOSE = 4   # id = session
    T_DRAIN = 5          # id = session
    T_SLOW_SERVE = 6     # id = ticket
    T_WL_EXPIRE = 7      # id = waitlist request
    T_RERELEASE = 8      # id = returns record
    T_WL_RECHECK = 9     # id = session
    T_NOSHOW_SCAN = 10   # id = session
    T_BILL_NOTICE = 11   # id = bill
    T_BILL_DUE = 12      # id = bill
    N_TIMER_KINDS = 12

cdef enum:  # TicketState
    K_QUEUED = 1
    K_SERVED = 2
    K_FAILED = 3
    K_CANCELLED = 4

cdef enum:  # RequestState
    RQ_OPEN = 1
    RQ_FILLED = 2
    RQ_EXPIRED = 3
    RQ_CANCELLED = 4

cdef enum:  # FlagReason
    FR_HOST = 1
    FR_BLACKLIST = 2
    FR_EARLY_REQUESTS = 3
    FR_CANCELLATIONS = 4
    FR_MANY_PATIENTS = 5
    FR_CANCEL_REBOOK = 6

cdef enum:  # Ticket.where: which list holds a ticket
    W_NONE = 0       # no list (a slow-lane ticket waiting for SLOW_SERVE)
    W_FAIR = 1       # the collecting cohort's fair list
    W_SLOW = 2       # the collecting cohort's slow list
    W_QUEUE = 3      # the session's drain queue (until a drain passes it)

cdef enum:  # Booking.flags
    F_HOLD = 1        # booked as a hold: hold_until = created_at + hold_ms
    F_SUSPENDED = 2   # ended by suspend: end_reason = SESSION_SUSPENDED
    F_RELEASED = 4    # a no-show by the grace rule: end_reason = SLOT_RELEASED, off its slot
    F_SETTLED = 8     # charged: its Cover holds the amount charged (hb), not a hold

cdef int64_t MAX_MS = 253_402_300_799_999   # slotengine.times.MAX_MS: sums stay in int64
cdef int64_t MAX_LABEL = 2_147_483_647      # hospital / department labels are int32
cdef int64_t MAX_ID = 2_147_483_647         # patients, accounts, bookings are int32
cdef int64_t MAX_RESERVE = 100_000_000      # Core.reserve: requests (~100 bytes each, written now)
cdef int64_t MAX_CAPACITY = 65535
cdef int64_t MAX_SLOT_MS = 86_400_000
cdef int64_t MAX_FEE = 1_000_000_000_000
cdef int64_t MAX_ADD = 10_000
cdef int64_t MAX_DAY = 2_147_483_647        # day labels are int32
cdef int64_t MAX_BITS = 4_294_967_295       # bitmap words are addressed by uint32
cdef int64_t MAX_HOLD_MS = 1_000_000_000_000


cdef enum:  # Core._slot_bk: a booking id (>= 0), else the state of an empty slot
    SB_FREE = -1
    SB_BLOCKED = -2
    SB_CANCELLED = -3
    SB_RETURNING = -4    # freed, hidden from open booking until its RERELEASE timer


cdef struct Session:
    # 72 bytes per session.  Slots live in the global slot vector: a slot holds
    # its booking id, and an occupied slot's state *is* its booking's state
    # (BookingState HELD..NO_SHOW == SlotState HELD..NO_SHOW), so no per-slot
    # state byte and no per-session counts are stored.
    int64_t starts_at
    int64_t end_at
    int64_t rollover_at
    int64_t cancel_cutoff_at
    int64_t fee
    int64_t slot_off      # first slot's index in Core._slot_bk
    uint32_t bm_off       # first free-bitmap word in Core._bits
    int32_t slot_ms
    int32_t day
    int32_t hospital
    int32_t department
    uint16_t capacity
    uint8_t tier
    uint8_t flags         # SF_ROLLED | SF_SUSPENDED | SF_CLOSED


cdef enum:  # Session.flags
    SF_ROLLED = 1
    SF_SUSPENDED = 2
    SF_CLOSED = 4
    SF_COLLECTING = 8     # a cohort is open (SessionX lists)
    SF_QUEUE = 16         # the drain queue has entries from its head on
    SF_DRAIN = 32         # a DRAIN timer is pending
    SF_LAST_CANCEL = 64   # SessionX.last_cancel_* is set


cdef struct Booking:
    # 48 bytes.  hold_until is derived (created_at + hold_ms when F_HOLD), and
    # end_reason is one flag bit: the contract only ever sets SESSION_SUSPENDED.
    int64_t created_at
    int64_t changed_at
    int32_t session
    int32_t patient
    int32_t account
    int32_t p_prev        # the patient's previous (older) booking, -1 at the end
    int32_t a_prev        # the account's previous (older) booking, -1 at the end
    int32_t live_next     # next booking in the patient's live list, -1 at the end
    uint16_t slot         # 0-based slot index in the session
    uint8_t state
    uint8_t channel
    uint8_t quota         # the channel whose quota it drew from
    uint8_t flags


cdef struct Patient:
    # 32 bytes (half a cache line); strike and cancel times live in
    # Core._strikes / Core._cancels with a fixed stride (len(ban_ms),
    # cancel_strikes), oldest first.  The first two hospitals the patient is
    # known at sit here, so the first-visit check reads no other memory;
    # further ones go to the Core._known hash set (known_more = 1).
    int64_t banned_until
    int32_t hist          # newest booking, -1 when none
    int32_t live          # head of the live (HELD/BOOKED) list, -1 when empty
    int32_t known0        # a hospital the patient is known at, -1 when none
    int32_t known1
    uint16_t n_strikes
    uint16_t n_cancels
    uint8_t known_more
    uint8_t wl            # 1 while Core._p_rq[p] >= 0 (the patient may have OPEN requests)
    uint8_t line_open     # 1 while the credit line is OPEN (Wallet.state; padding byte)


cdef struct Timer:
    int64_t due
    int64_t seq
    int32_t kind
    int32_t id


cdef struct Event:
    # 40 bytes.  slot is 1-based (0 when none), reason a Reason code (0 when none).
    int64_t at
    int64_t detail
    int32_t kind
    int32_t session
    int32_t booking
    int32_t patient
    int32_t account
    uint16_t slot
    int16_t reason


cdef enum:
    NAME_KEY = 26     # the longest account name kept inline in its row (ASCII)
    EARLY_INLINE = 8  # the longest early-request ring kept in its account's row


cdef struct Account:
    # 128 bytes, two cache lines side by side.  The first: flag and block
    # state and the GCRA theoretical arrival time, and key: the account's name
    # when it is ASCII of at most NAME_KEY characters (key_len 0 otherwise,
    # and until the name index reaches the account), so that cancel_named's
    # owner check compares the caller's string with a row the cancel reads
    # anyway (_names.pxi).  The second: the early-request ring, oldest first,
    # when early_count <= EARLY_INLINE (else it lives in Core._early with
    # stride early_count; Core._early_ring finds it): a rush request reads
    # the account's state and its ring, and two lines in one 128-byte block
    # cost it less than two rows of two tables.  The cancel ring lives in
    # Core._acancels with stride cancel_flag_count.
    int64_t flag_until
    int64_t flag_since
    int64_t blocked_until
    int64_t tat
    uint16_t n_early
    uint16_t n_cancels
    int8_t flag_reason
    uint8_t key_len
    char key[NAME_KEY]
    int64_t early[EARLY_INLINE]


cdef struct Mark:
    # 32 bytes: a patient's flag and block state (Core._pmarks).
    int64_t flag_until
    int64_t flag_since
    int64_t blocked_until
    int32_t flag_reason


cdef struct Ticket:
    # 56 bytes.  A ticket sits on at most one list (where): the cohort's fair
    # or slow list (Core._fair / Core._slow, arrays) or the drain queue (linked
    # through next); QUEUED tickets are also on their patient's queued list,
    # linked through p_next.
    int64_t submitted_at
    int64_t served_at
    int32_t session
    int32_t patient
    int32_t account
    int32_t booking
    int32_t draw
    int32_t cohort_size
    int32_t next
    int32_t p_next
    int16_t reason
    uint8_t channel
    uint8_t state
    uint8_t hold
    uint8_t lane
    uint8_t where


cdef struct SessionX:
    # 32 bytes per session: drain queue, last cancel and doctor (the open cohort's
    # lists are Core._fair / Core._slow).  Read only when the session's flags
    # say so (SF_COLLECTING, SF_QUEUE, SF_LAST_CANCEL).
    int64_t cohort_close
    int64_t last_cancel_at
    int32_t last_cancel_acct
    int32_t q_head
    int32_t q_tail
    int32_t doctor        # opaque doctor label, -1 when none (suspension moves)


cdef struct FlagRow:
    int64_t at
    int64_t until
    int32_t key
    int8_t kind
    int8_t reason


# -- argument conversion (raise before any state changes) ----------------------

cdef int64_t _slow_int(object x, str name, bint is_id) except? -1:
    cdef int overflow = 0
    cdef long long v
    if isinstance(x, bool):
        raise InvalidType(f"{name} must be an int, not bool")
    try:
        x = _index(x)
    except TypeError:
        raise InvalidType(f"{name} must be an int, not {type(x).__name__}") from None
    v = PyLong_AsLongLongAndOverflow(x, &overflow)
    if overflow:
        if is_id:
            return -1
        raise InvalidArgument(f"{name}={x} is out of range")
    return v


cdef inline int64_t _int(object x, str name) except? -1:
    """An int argument: exact ints take the fast path, else ``__index__`` (not bool)."""
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(x):
        v = PyLong_AsLongLongAndOverflow(x, &overflow)
        if overflow:
            raise InvalidArgument(f"{name}={x} is out of range")
        return v
    return _slow_int(x, name, False)


cdef inline int64_t _id(object x, str name) except? -2:
    """Like _int for an id: a value beyond int64 is just out of range (-1)."""
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(x):
        v = PyLong_AsLongLongAndOverflow(x, &overflow)
        return -1 if overflow else v
    return _slow_int(x, name, True)


cdef inline int64_t _time(object x, str name) except? -1:
    cdef int64_t v = _int(x, name)
    if v < 0 or v > MAX_MS:
        raise InvalidArgument(f"{name}={v} is outside 0..{MAX_MS} milliseconds")
    return v


cdef inline bint _truth(object x) except -1:
    if x is True:
        return True
    if x is False:
        return False
    return bool(x)


cdef object _int_column(object x, str name):
    """A 1-D contiguous int64 array from an int array or a sequence of ints."""
    cdef object a
    if isinstance(x, np.ndarray):
        a = x
    else:
        try:
            a = np.asarray(x)
        except (TypeError, ValueError, OverflowError):
            raise InvalidType(f"{name} must be a 1-D sequence of ints") from None
    if a.ndim != 1:
        raise InvalidArgument(f"{name} must be 1-D, not {a.ndim}-D")
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    kind = a.dtype.kind
    if kind == "O":
        a = np.asarray([_int(v, name) for v in a], dtype=np.int64)
    elif kind == "u":
        if a.dtype.itemsize == 8 and a.max() > 0x7FFFFFFFFFFFFFFF:
            raise InvalidArgument(f"{name} has values out of range")
    elif kind != "i":
        raise InvalidType(f"{name} must hold ints, not {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


cdef struct BookOut:
    # What one book (or serve) hands back besides its packed code.
    int64_t ticket        # -1 when none
    int64_t retry         # retry_after ms, 0 when none
    int32_t slot          # 0-based, -1 when none
    int32_t booking       # -1 when none


# -- waitlist (issue 4; see _waitlist.pxi) --------------------------------------

cdef enum:
    WL_MAX_CAND = 8       # candidate sessions per request
    WL_MAX_QUEUES = 9     # class 0 (moved off a suspended session) + up to 8 host classes


cdef struct Request:
    # 64 bytes, one cache line (Core._requests is 64-byte aligned, se_alloc):
    # what a fill check reads and a fill writes.  The rest of a request is in
    # RequestCold.  An OPEN request has one WlEntry in the class queue of every
    # candidate.
    int32_t account
    int32_t patient
    uint8_t state
    uint8_t channel
    uint8_t klass
    uint8_t n_cand
    int16_t skip_reason
    int16_t unused
    int32_t cand[8]
    int32_t booking        # -1 until FILLED
    int32_t filled_session # -1 until FILLED
    int64_t changed_at


cdef struct RequestCold:
    # 24 bytes per request (Core._rq_cold), read off the fill path.  Every
    # request is on its patient's and its account's lists (singly linked
    # through p_next / a_next, newest first) until a walk of the list finds
    # it closed and drops it.
    int64_t created_at
    int64_t deadline
    int32_t p_next         # the patient's next older request on its list, -1 at the end
    int32_t a_next         # the account's next older request on its list, -1 at the end


cdef struct WlEntry:
    # 12 bytes: one request in one session's class FIFO.  The request's patient
    # and account are copied here so that a pass can fetch the request, the
    # patient and the account's history at once rather than one after another.
    int32_t req
    int32_t patient
    int32_t account


cdef struct WlQueue:
    # One class FIFO: entries [off + head, off + len) of Core._wq, in order;
    # room up to off + cap.  Entries before head are dead.
    int32_t off
    int32_t cap
    int32_t head
    int32_t len


cdef struct WlSession:
    # 160 bytes, only for sessions that ever had a request or a no-show scan
    # (Core._wl_of maps a session to its block, -1 when none; open[s] lives in
    # the dense Core._wl_open, which closing a request touches for every
    # candidate).
    int64_t recheck_at     # due of the live WL_RECHECK timer, -1 when none
    int32_t scan_k         # next slot the no-show scan looks at
    int32_t unused
    WlQueue q[9]           # class 0 (moved), then the host classes


cdef struct ReturnRec:
    # A RETURNING slot's record (Core._returns, index = RERELEASE timer id).
    int32_t session
    int32_t slot           # 0-based


cdef struct FilledRec:
    # booking -> the request it filled (Core._filled, ascending booking ids).
    int32_t booking
    int32_t request


# -- credit and prepaid balances (issue 5; see _credit.pxi) ---------------------

cdef enum:  # LineKind
    LK_OUTPATIENT = 1
    LK_INPATIENT = 2

cdef enum:  # LineState
    LS_NONE = 0
    LS_OPEN = 1
    LS_SUSPENDED = 2
    LS_CLOSED = 3

cdef enum:  # BillState
    BS_OPEN = 1
    BS_OVERDUE = 2
    BS_PAID = 3

cdef enum:  # LedgerAccount
    LA_EXTERNAL = 0
    LA_HOSPITAL = 1
    LA_BALANCE = 2
    LA_CREDIT = 3

cdef enum:  # MoveKind
    MK_TOP_UP = 1
    MK_PAY_BALANCE = 2
    MK_PAY_CREDIT = 3
    MK_REPAY = 4
    MK_REFUND = 5

cdef int64_t MAX_FEN = 1_000_000_000_000         # any amount, fee or limit argument
cdef int64_t MAX_BALANCE = 1_000_000_000_000_000 # a prepaid balance never passes this


cdef extern from *:
    """
    /* One patient's wallet: 64 bytes (48 used), aligned to a cache line (C++17
       aligned new).  The cold fields: a booking's cover check and hold touch
       only the patient's Purse (bal_held = balance - free, held = limit - used
       - room) and Patient.line_open. */
    struct alignas(64) se_wallet {
        int64_t balance;      /* prepaid money, >= 0 */
        int64_t limit;        /* credit line limit */
        int64_t used;         /* billed and unpaid */
        int32_t bill_first;   /* the patient's bills, linked by Bill.next in id */
        int32_t bill_unpaid;  /* order: first, first unpaid (bills are repaid */
        int32_t bill_last;    /* oldest first, so the unpaid ones are a suffix), last */
        int32_t streak;       /* bills paid on time in a row */
        int32_t n_overdue;    /* bills now OVERDUE */
        uint8_t kind;         /* LineKind, 0 when no line was ever opened */
        uint8_t state;        /* LineState */
    };
    static_assert(sizeof(se_wallet) == 64, "a wallet is one cache line");
    """
    ctypedef struct Wallet "se_wallet":
        int64_t balance
        int64_t limit
        int64_t used
        int32_t bill_first
        int32_t bill_unpaid
        int32_t bill_last
        int32_t streak
        int32_t n_overdue
        uint8_t kind
        uint8_t state


cdef struct Purse:
    # 16 bytes, four a cache line: the hot part of a patient's money
    # (Core._purses, parallel to Core._wallets).  A booking's cover check and
    # hold read and write only this (and Patient.line_open), so book_many
    # dirties 16 B per patient, not a 64-byte wallet line.
    int64_t free          # the free balance: balance - bal_held
    int64_t room          # the free credit: limit - used - held, whatever the line's state


cdef struct Cover:
    # 16 bytes: a booking's or a waitlist request's hold (Core._bcover parallel
    # to the bookings once money touched one, so bookings stay 48 B without
    # money; Core._rcover parallel to the requests with cover on).  A charge
    # ends the hold, so a settled booking (Booking.flags & F_SETTLED) keeps the
    # amount charged in hb (hc = 0): the booking stream grows by 16 B, not 24.
    int64_t hb            # held on the balance (the amount charged once settled)
    int64_t hc            # held on the credit line


cdef struct Bill:
    # 56 bytes.
    int64_t amount
    int64_t paid
    int64_t created_at
    int64_t due_at
    int64_t paid_at       # -1 until PAID
    int32_t patient
    int32_t booking
    int32_t next          # the patient's next (newer) bill, -1 at the end
    uint8_t state


cdef struct Move:
    # 40 bytes: one ledger movement (its seq is its index).
    int64_t ncmd
    int64_t at
    int64_t amount
    int32_t patient
    int32_t booking       # -1 when none
    int32_t bill          # -1 when none
    uint8_t source        # LedgerAccount
    uint8_t target
    uint8_t kind          # MoveKind


cdef inline int64_t _amount(object x, str name, int64_t lo) except? -1:
    """A money amount in lo..MAX_FEN fen: bool/float -> InvalidType, else InvalidArgument."""
    cdef int64_t v = _int(x, name)
    if v < lo or v > MAX_FEN:
        raise InvalidArgument(f"{name}={v} is outside {lo}..{MAX_FEN} fen")
    return v
