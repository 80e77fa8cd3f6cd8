# Snapshots of the compiled core (included at the end of _core.pyx; the contract
# is docs/durability.md, "Core API").
#
# ``Core.snapshot()`` writes the whole engine state as one bytes object and
# ``Core.restore(data)`` reads it back into a freshly constructed Core of the
# same policy.  The state is a few dozen std::vectors of plain structs and ints
# (see _core.pyx), so a snapshot is those vectors' bytes one after another: an
# element count each and a memcpy, no per-record encoding.
#
# Format, version 2.  Native byte order (the header carries a byte-order mark,
# so a snapshot from a machine of the other order is refused, never misread);
# every section starts at a multiple of 8 bytes and padding is zero.
#
#   offset  type                 field
#   0       8 bytes              magic b"SLOTCORE"
#   8       u32                  format version (SN_VERSION)
#   12      u32                  byte-order mark 0x01020304
#   16      u32                  header bytes (where the first vector starts)
#   20      u32                  vectors (SN_NVEC)
#   24      u32                  shape values (SN_NSHAPE)
#   28      u32                  scalars (SN_NSCALAR)
#   32      i64[SN_NSHAPE]       the policy values that shape the state: channels,
#                                public channel, strike / cancel / early / cancel-flag
#                                ring strides, waitlist classes, cover
#   ...     u64                  digest of every policy value the core reads
#   ...     i64[SN_NSCALAR]      the state scalars (SN_* below; rng as its bits)
#   ...     u32[SN_NVEC]         element size of each vector (sizeof its struct),
#                                zero-padded to 8 bytes
#   ...     u64[SN_NVEC]         element count of each vector
#   header  ...                  each vector's elements (count x size bytes), in
#                                SV_* order, each zero-padded to 8 bytes
#
# The length of the data is exactly the header plus the padded vectors:
# anything after them is refused.  What is saved and what is not:
#
# * saved (state): every vector and scalar that a command reads from one
#   command to the next: the SV_* vectors and SN_* scalars below.  The
#   per-session cohort lists (Core._fair / Core._slow, a vector of vectors)
#   are saved as runs: (session, length) for each non-empty list, then their
#   tickets back to back.
# * not saved (policy): everything __init__ computes from the policy (the
#   channel count, limits, windows, ban ladder, credit terms, ...).  The
#   restoring Core was built from its own policy; the shape values and the
#   digest in the header make sure it is the same one.
# * not saved (scratch): Core._scratch, _shuf, _wq_keep, _rq_scratch, _left:
#   each is filled and consumed within one command.
# * not saved (bindings): the Engine's intern dicts, callbacks and names lists
#   (bind_names) and the name indexes built from them (_names.pxi): restore
#   empties the indexes, which refill from the bound lists on first use.
#
# Struct padding is copied as it is in memory, so two engines in the same state
# may write snapshots that differ in padding bytes (never in a field).

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcmp


cdef extern from *:
    """
    /* Replace v's contents with n elements copied from src (any alignment);
       v's capacity becomes n.  Built aside and swapped in, so v is unchanged
       if the allocation fails. */
    #include <type_traits>
    #include <stdint.h>
    template <class V> static inline void se_snap_load(V& v, const char* src, size_t n) {
        typedef typename std::decay<V>::type Vec;   /* Cython may name V as a reference */
        typedef typename Vec::value_type T;
        static_assert(std::is_trivially_copyable<T>::value, "a snapshot copies bytes");
        Vec fresh;
        if ((uintptr_t)src % alignof(T) == 0) {
            /* one pass: the range insert of a trivial type is a memmove */
            fresh.reserve(n);
            fresh.insert(fresh.end(), (const T*)src, (const T*)src + n);
        } else {
            fresh.resize(n);
            if (n)
                memcpy((void*)fresh.data(), src, n * sizeof(T));
        }
        v.swap(fresh);
    }
    """
    void se_snap_load[V](V& v, const char* src, size_t n) except +


cdef enum:
    SN_VERSION = 2       # 2: Account is 128 bytes, the early ring in its row
    SN_BOM = 0x01020304

cdef enum:  # the vectors, in the order they are written
    SV_SESSIONS = 0
    SV_Q_INIT
    SV_Q_LEFT
    SV_RELEASE
    SV_SLOT_BK
    SV_BITS
    SV_BOOKINGS
    SV_PATIENTS
    SV_STRIKES
    SV_CANCELS
    SV_ACCT_HIST
    SV_TIMERS
    SV_EVENTS
    SV_KNOWN
    SV_SX
    SV_FAIR_RUNS          # (session, length) of each non-empty Core._fair list
    SV_FAIR               # their tickets, back to back
    SV_SLOW_RUNS
    SV_SLOW
    SV_ACCTS
    SV_EARLY
    SV_ACANCELS
    SV_PMARKS
    SV_P_TQ
    SV_TICKETS
    SV_FLAG_LOG
    SV_REQUESTS
    SV_RQ_COLD
    SV_RQ_OPEN
    SV_WQ
    SV_WLS
    SV_WL_OF
    SV_WL_OPEN
    SV_P_RQ
    SV_A_RQ
    SV_FILLED
    SV_RETURNS
    SV_WALLETS
    SV_PURSES
    SV_BCOVER
    SV_RCOVER
    SV_BILLS
    SV_MOVES
    SN_NVEC

cdef enum:  # the state scalars
    SN_NOW = 0
    SN_RNG
    SN_SEQ
    SN_N_FREE
    SN_N_KNOWN
    SN_KNOWN_SHIFT
    SN_N_QUEUED
    SN_N_MARKS
    SN_N_PMARKS
    SN_WQ_DEAD
    SN_WQ_LIVE
    SN_N_OPEN
    SN_NCMD
    SN_MONEY
    SN_NSCALAR

cdef enum:  # the shape values
    SH_N_CH = 0
    SH_PUB
    SH_N_BAN
    SH_CANCEL_STRIKES
    SH_EARLY_COUNT
    SH_CFLAG_COUNT
    SH_WL_CLASSES
    SH_COVER
    SN_NSHAPE

_SN_VECTORS = (
    "sessions", "q_init", "q_left", "release", "slot_bk", "bits", "bookings", "patients",
    "strikes", "cancels", "acct_hist", "timers", "events", "known", "sx", "fair_runs", "fair",
    "slow_runs", "slow", "accts", "early", "acancels", "pmarks", "p_tq", "tickets", "flag_log",
    "requests", "rq_cold", "rq_open", "wq", "wls", "wl_of", "wl_open", "p_rq", "a_rq", "filled",
    "returns", "wallets", "purses", "bcover", "rcover", "bills", "moves")
_SN_SCALARS = ("now", "rng", "seq", "n_free", "n_known", "known_shift", "n_queued", "n_marks",
               "n_pmarks", "wq_dead", "wq_live", "n_open", "ncmd", "money")
_SN_SHAPE = ("n_channels", "public_channel", "len(ban_ms)", "cancel_strikes", "early_count",
             "cancel_flag_count", "wl_classes", "cover")

cdef const char* SN_MAGIC = b"SLOTCORE"


cdef struct SnapRun:
    # one non-empty cohort list: its session and length
    int32_t session
    int32_t n


cdef struct SnapHead:
    # a parsed, validated header: where each vector's elements start in the data
    int64_t shape[<int>SN_NSHAPE]
    uint64_t digest
    int64_t scalar[<int>SN_NSCALAR]
    uint64_t elsize[<int>SN_NVEC]
    uint64_t count[<int>SN_NVEC]
    uint64_t offset[<int>SN_NVEC]


cdef inline uint64_t sn_pad8(uint64_t n) noexcept nogil:
    return (n + 7) & ~(<uint64_t>7)


cdef inline uint64_t sn_header_bytes() noexcept nogil:
    return (32 + 8 * SN_NSHAPE + 8 + 8 * SN_NSCALAR + sn_pad8(4 * SN_NVEC)
            + 8 * SN_NVEC)


cdef void sn_elsizes(uint64_t* z) noexcept nogil:
    """The element size of every vector in this build."""
    z[SV_SESSIONS] = sizeof(Session)
    z[SV_Q_INIT] = sizeof(uint16_t)
    z[SV_Q_LEFT] = sizeof(uint16_t)
    z[SV_RELEASE] = sizeof(int64_t)
    z[SV_SLOT_BK] = sizeof(int32_t)
    z[SV_BITS] = sizeof(uint64_t)
    z[SV_BOOKINGS] = sizeof(Booking)
    z[SV_PATIENTS] = sizeof(Patient)
    z[SV_STRIKES] = sizeof(int64_t)
    z[SV_CANCELS] = sizeof(int64_t)
    z[SV_ACCT_HIST] = sizeof(int32_t)
    z[SV_TIMERS] = sizeof(Timer)
    z[SV_EVENTS] = sizeof(Event)
    z[SV_KNOWN] = sizeof(uint64_t)
    z[SV_SX] = sizeof(SessionX)
    z[SV_FAIR_RUNS] = sizeof(SnapRun)
    z[SV_FAIR] = sizeof(int32_t)
    z[SV_SLOW_RUNS] = sizeof(SnapRun)
    z[SV_SLOW] = sizeof(int32_t)
    z[SV_ACCTS] = sizeof(Account)
    z[SV_EARLY] = sizeof(int64_t)
    z[SV_ACANCELS] = sizeof(int64_t)
    z[SV_PMARKS] = sizeof(Mark)
    z[SV_P_TQ] = sizeof(int32_t)
    z[SV_TICKETS] = sizeof(Ticket)
    z[SV_FLAG_LOG] = sizeof(FlagRow)
    z[SV_REQUESTS] = sizeof(Request)
    z[SV_RQ_COLD] = sizeof(RequestCold)
    z[SV_RQ_OPEN] = sizeof(uint64_t)
    z[SV_WQ] = sizeof(WlEntry)
    z[SV_WLS] = sizeof(WlSession)
    z[SV_WL_OF] = sizeof(int32_t)
    z[SV_WL_OPEN] = sizeof(int32_t)
    z[SV_P_RQ] = sizeof(int32_t)
    z[SV_A_RQ] = sizeof(int32_t)
    z[SV_FILLED] = sizeof(FilledRec)
    z[SV_RETURNS] = sizeof(ReturnRec)
    z[SV_WALLETS] = sizeof(Wallet)
    z[SV_PURSES] = sizeof(Purse)
    z[SV_BCOVER] = sizeof(Cover)
    z[SV_RCOVER] = sizeof(Cover)
    z[SV_BILLS] = sizeof(Bill)
    z[SV_MOVES] = sizeof(Move)


cdef void sn_vectors(Core self, const void** p, uint64_t* n) noexcept nogil:
    """Where each vector's elements are and how many (the cohort lists: counts only)."""
    cdef size_t sid
    cdef uint64_t runs, total
    p[SV_SESSIONS] = self._sessions.data()
    n[SV_SESSIONS] = self._sessions.size()
    p[SV_Q_INIT] = self._q_init.data()
    n[SV_Q_INIT] = self._q_init.size()
    p[SV_Q_LEFT] = self._q_left.data()
    n[SV_Q_LEFT] = self._q_left.size()
    p[SV_RELEASE] = self._release.data()
    n[SV_RELEASE] = self._release.size()
    p[SV_SLOT_BK] = self._slot_bk.data()
    n[SV_SLOT_BK] = self._slot_bk.size()
    p[SV_BITS] = self._bits.data()
    n[SV_BITS] = self._bits.size()
    p[SV_BOOKINGS] = self._bookings.data()
    n[SV_BOOKINGS] = self._bookings.size()
    p[SV_PATIENTS] = self._patients.data()
    n[SV_PATIENTS] = self._patients.size()
    p[SV_STRIKES] = self._strikes.data()
    n[SV_STRIKES] = self._strikes.size()
    p[SV_CANCELS] = self._cancels.data()
    n[SV_CANCELS] = self._cancels.size()
    p[SV_ACCT_HIST] = self._acct_hist.data()
    n[SV_ACCT_HIST] = self._acct_hist.size()
    p[SV_TIMERS] = self._timers.data()
    n[SV_TIMERS] = self._timers.size()
    p[SV_EVENTS] = self._events.data()
    n[SV_EVENTS] = self._events.size()
    p[SV_KNOWN] = self._known.data()
    n[SV_KNOWN] = self._known.size()
    p[SV_SX] = self._sx.data()
    n[SV_SX] = self._sx.size()
    runs = 0
    total = 0
    for sid in range(self._fair.size()):
        if self._fair[sid].size():
            runs += 1
            total += self._fair[sid].size()
    p[SV_FAIR_RUNS] = NULL
    n[SV_FAIR_RUNS] = runs
    p[SV_FAIR] = NULL
    n[SV_FAIR] = total
    runs = 0
    total = 0
    for sid in range(self._slow.size()):
        if self._slow[sid].size():
            runs += 1
            total += self._slow[sid].size()
    p[SV_SLOW_RUNS] = NULL
    n[SV_SLOW_RUNS] = runs
    p[SV_SLOW] = NULL
    n[SV_SLOW] = total
    p[SV_ACCTS] = self._accts.data()
    n[SV_ACCTS] = self._accts.size()
    p[SV_EARLY] = self._early.data()
    n[SV_EARLY] = self._early.size()
    p[SV_ACANCELS] = self._acancels.data()
    n[SV_ACANCELS] = self._acancels.size()
    p[SV_PMARKS] = self._pmarks.data()
    n[SV_PMARKS] = self._pmarks.size()
    p[SV_P_TQ] = self._p_tq.data()
    n[SV_P_TQ] = self._p_tq.size()
    p[SV_TICKETS] = self._tickets.data()
    n[SV_TICKETS] = self._tickets.size()
    p[SV_FLAG_LOG] = self._flag_log.data()
    n[SV_FLAG_LOG] = self._flag_log.size()
    p[SV_REQUESTS] = self._requests.data()
    n[SV_REQUESTS] = self._requests.size()
    p[SV_RQ_COLD] = self._rq_cold.data()
    n[SV_RQ_COLD] = self._rq_cold.size()
    p[SV_RQ_OPEN] = self._rq_open.data()
    n[SV_RQ_OPEN] = self._rq_open.size()
    p[SV_WQ] = self._wq.data()
    n[SV_WQ] = self._wq.size()
    p[SV_WLS] = self._wls.data()
    n[SV_WLS] = self._wls.size()
    p[SV_WL_OF] = self._wl_of.data()
    n[SV_WL_OF] = self._wl_of.size()
    p[SV_WL_OPEN] = self._wl_open.data()
    n[SV_WL_OPEN] = self._wl_open.size()
    p[SV_P_RQ] = self._p_rq.data()
    n[SV_P_RQ] = self._p_rq.size()
    p[SV_A_RQ] = self._a_rq.data()
    n[SV_A_RQ] = self._a_rq.size()
    p[SV_FILLED] = self._filled.data()
    n[SV_FILLED] = self._filled.size()
    p[SV_RETURNS] = self._returns.data()
    n[SV_RETURNS] = self._returns.size()
    p[SV_WALLETS] = self._wallets.data()
    n[SV_WALLETS] = self._wallets.size()
    p[SV_PURSES] = self._purses.data()
    n[SV_PURSES] = self._purses.size()
    p[SV_BCOVER] = self._bcover.data()
    n[SV_BCOVER] = min(self._bcover.size(), self._bookings.size())   # none ahead: unset
    p[SV_RCOVER] = self._rcover.data()
    n[SV_RCOVER] = self._rcover.size()
    p[SV_BILLS] = self._bills.data()
    n[SV_BILLS] = self._bills.size()
    p[SV_MOVES] = self._moves.data()
    n[SV_MOVES] = self._moves.size()


cdef void sn_shape(Core self, int64_t* sh) noexcept nogil:
    sh[SH_N_CH] = self._n_ch
    sh[SH_PUB] = self._pub
    sh[SH_N_BAN] = self._n_ban
    sh[SH_CANCEL_STRIKES] = self._cancel_strikes
    sh[SH_EARLY_COUNT] = self._early_count
    sh[SH_CFLAG_COUNT] = self._cflag_count
    sh[SH_WL_CLASSES] = self._wl_classes
    sh[SH_COVER] = self._cover


cdef inline uint64_t sn_mix(uint64_t h, int64_t v) noexcept nogil:
    h = (h ^ <uint64_t>v) * 0x9E3779B97F4A7C15ULL
    return h ^ (h >> 29)


cdef uint64_t sn_policy_digest(Core self) noexcept nogil:
    """A digest of every policy value the core reads (what __init__ sets from it)."""
    cdef uint64_t h = 0x736C6F74706F6C31ULL
    cdef size_t i
    h = sn_mix(h, self._n_ch)
    h = sn_mix(h, self._pub)
    h = sn_mix(h, self._hold_ms)
    h = sn_mix(h, <int64_t>self._lim_count.size())
    for i in range(self._lim_count.size()):
        h = sn_mix(h, self._lim_count[i])
        h = sn_mix(h, self._lim_window[i])
    h = sn_mix(h, self._lim_max_window)
    h = sn_mix(h, self._one_dd)
    h = sn_mix(h, self._acct_patients)
    h = sn_mix(h, self._acct_window)
    h = sn_mix(h, self._bar_expert)
    h = sn_mix(h, <int64_t>self._ban_ms.size())
    for i in range(self._ban_ms.size()):
        h = sn_mix(h, self._ban_ms[i])
    h = sn_mix(h, self._n_ban)
    h = sn_mix(h, self._strike_window)
    h = sn_mix(h, self._cancel_strikes)
    h = sn_mix(h, self._cancel_window)
    h = sn_mix(h, self._prequeue)
    h = sn_mix(h, self._cohort_ms)
    h = sn_mix(h, self._gap)
    h = sn_mix(h, self._slow_delay)
    h = sn_mix(h, self._slow_T)
    h = sn_mix(h, self._slow_tau)
    h = sn_mix(h, self._early_ms)
    h = sn_mix(h, self._early_count)
    h = sn_mix(h, self._early_window)
    h = sn_mix(h, self._cflag_count)
    h = sn_mix(h, self._cflag_window)
    h = sn_mix(h, self._pflag_count)
    h = sn_mix(h, self._pflag_window)
    h = sn_mix(h, self._rebook_ms)
    h = sn_mix(h, self._flag_ms)
    h = sn_mix(h, self._cohort_on)
    h = sn_mix(h, self._wl_classes)
    h = sn_mix(h, self._wl_candidates)
    h = sn_mix(h, self._wl_per_patient)
    h = sn_mix(h, self._wl_session_cap)
    h = sn_mix(h, self._rr_min)
    h = sn_mix(h, self._rr_max)
    h = sn_mix(h, self._grace)
    h = sn_mix(h, self._suspend_action)
    h = sn_mix(h, self._cover)
    h = sn_mix(h, self._settle_ci)
    for i in range(8):
        h = sn_mix(h, self._terms[i])
    h = sn_mix(h, self._raise_after)
    h = sn_mix(h, self._bill_due)
    h = sn_mix(h, self._bill_notice)
    return h


cdef void sn_scalars_get(Core self, int64_t* sc) noexcept nogil:
    sc[SN_NOW] = self._now
    sc[SN_RNG] = <int64_t>self._rng
    sc[SN_SEQ] = self._seq
    sc[SN_N_FREE] = self._n_free
    sc[SN_N_KNOWN] = self._n_known
    sc[SN_KNOWN_SHIFT] = self._known_shift
    sc[SN_N_QUEUED] = self._n_queued
    sc[SN_N_MARKS] = self._n_marks
    sc[SN_N_PMARKS] = self._n_pmarks
    sc[SN_WQ_DEAD] = self._wq_dead
    sc[SN_WQ_LIVE] = self._wq_live
    sc[SN_N_OPEN] = self._n_open
    sc[SN_NCMD] = self._ncmd
    sc[SN_MONEY] = self._money


cdef void sn_scalars_set(Core self, const int64_t* sc) noexcept nogil:
    self._now = sc[SN_NOW]
    self._rng = <uint64_t>sc[SN_RNG]
    self._seq = sc[SN_SEQ]
    self._n_free = sc[SN_N_FREE]
    self._n_known = sc[SN_N_KNOWN]
    self._known_shift = <int>sc[SN_KNOWN_SHIFT]
    self._n_queued = sc[SN_N_QUEUED]
    self._n_marks = sc[SN_N_MARKS]
    self._n_pmarks = sc[SN_N_PMARKS]
    self._wq_dead = sc[SN_WQ_DEAD]
    self._wq_live = sc[SN_WQ_LIVE]
    self._n_open = sc[SN_N_OPEN]
    self._ncmd = sc[SN_NCMD]
    self._money = sc[SN_MONEY] != 0


cdef bint sn_fresh(Core self) noexcept nogil:
    """No state yet: every state vector empty, every state scalar as __init__ left it
    (the generator aside: restore replaces it, whatever rng_next did to it)."""
    cdef const void* p[<int>SN_NVEC]
    cdef uint64_t n[<int>SN_NVEC]
    cdef int i
    sn_vectors(self, p, n)
    for i in range(SN_NVEC):
        if n[i]:
            return False
    return (self._fair.size() == 0 and self._slow.size() == 0 and self._now == 0
            and self._seq == 0 and self._n_free == 0 and self._n_known == 0
            and self._known_shift == 64 and self._n_queued == 0 and self._n_marks == 0
            and self._n_pmarks == 0 and self._wq_dead == 0 and self._wq_live == 0
            and self._n_open == 0 and self._ncmd == 0 and self._money == self._cover
            and self._aidx_n == 0 and self._pidx_n == 0)


cdef void sn_clear(Core self) noexcept:
    """Empty every state vector (as __init__ does); scalars are the caller's."""
    self._drop_names()
    self._sessions.clear()
    self._q_init.clear()
    self._q_left.clear()
    self._release.clear()
    self._slot_bk.clear()
    self._bits.clear()
    self._bookings.clear()
    self._patients.clear()
    self._strikes.clear()
    self._cancels.clear()
    self._acct_hist.clear()
    self._timers.clear()
    self._events.clear()
    self._known.clear()
    self._sx.clear()
    self._fair.clear()
    self._slow.clear()
    self._accts.clear()
    self._early.clear()
    self._acancels.clear()
    self._pmarks.clear()
    self._p_tq.clear()
    self._tickets.clear()
    self._flag_log.clear()
    self._requests.clear()
    self._rq_cold.clear()
    self._rq_open.clear()
    self._wq.clear()
    self._wls.clear()
    self._wl_of.clear()
    self._wl_open.clear()
    self._p_rq.clear()
    self._a_rq.clear()
    self._filled.clear()
    self._returns.clear()
    self._wallets.clear()
    self._purses.clear()
    self._bcover.clear()
    self._rcover.clear()
    self._bills.clear()
    self._moves.clear()


# -- writing ---------------------------------------------------------------------------

cdef void sn_write_runs(const vector[vector[int32_t]]& lists, char* runs,
                        char* data) noexcept nogil:
    """(session, length) of each non-empty list into runs, its tickets into data."""
    cdef size_t sid, n
    cdef SnapRun run
    for sid in range(lists.size()):
        n = lists[sid].size()
        if n == 0:
            continue
        run.session = <int32_t>sid
        run.n = <int32_t>n
        memcpy(runs, &run, sizeof(SnapRun))
        runs += sizeof(SnapRun)
        memcpy(data, lists[sid].data(), n * sizeof(int32_t))
        data += n * sizeof(int32_t)


cdef bytes sn_snapshot(Core self):
    """Core.snapshot(): the header, then every vector's bytes.  O(state), a memcpy each."""
    cdef const void* p[<int>SN_NVEC]
    cdef uint64_t n[<int>SN_NVEC]
    cdef uint64_t z[<int>SN_NVEC]
    cdef uint64_t off[<int>SN_NVEC]
    cdef int64_t sh[<int>SN_NSHAPE]
    cdef int64_t sc[<int>SN_NSCALAR]
    cdef uint64_t head = sn_header_bytes(), pos, digest, used, i
    cdef uint32_t u32[6]
    cdef uint32_t zi
    cdef int k
    cdef char* buf
    cdef char* at
    sn_vectors(self, p, n)
    sn_elsizes(z)
    sn_shape(self, sh)
    sn_scalars_get(self, sc)
    digest = sn_policy_digest(self)
    pos = head
    for k in range(SN_NVEC):
        off[k] = pos
        pos += sn_pad8(n[k] * z[k])
    out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>pos)
    buf = PyBytes_AS_STRING(out)
    with nogil:
        memset(buf, 0, head)
        memcpy(buf, SN_MAGIC, 8)
        u32[0] = SN_VERSION
        u32[1] = SN_BOM
        u32[2] = <uint32_t>head
        u32[3] = SN_NVEC
        u32[4] = SN_NSHAPE
        u32[5] = SN_NSCALAR
        memcpy(buf + 8, u32, sizeof(u32))
        at = buf + 32
        memcpy(at, sh, sizeof(sh))
        at += sizeof(sh)
        memcpy(at, &digest, 8)
        at += 8
        memcpy(at, sc, sizeof(sc))
        at += sizeof(sc)
        for k in range(SN_NVEC):
            zi = <uint32_t>z[k]
            memcpy(at + 4 * k, &zi, 4)
        at += sn_pad8(4 * SN_NVEC)
        memcpy(at, n, sizeof(n))
        for k in range(SN_NVEC):
            used = n[k] * z[k]
            if used and p[k] != NULL:
                memcpy(buf + off[k], p[k], used)
            memset(buf + off[k] + used, 0, sn_pad8(used) - used)
        sn_write_runs(self._fair, buf + off[SV_FAIR_RUNS], buf + off[SV_FAIR])
        sn_write_runs(self._slow, buf + off[SV_SLOW_RUNS], buf + off[SV_SLOW])
    return out


# -- reading ---------------------------------------------------------------------------

cdef inline uint32_t sn_u32(const char* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t sn_u64(const char* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef int sn_parse(Core self, const char* buf, uint64_t length, SnapHead* h) except -1:
    """Read and check the header, the vectors' extents and their consistency with each
    other and with this core's policy; SnapshotError if anything is off.  Changes
    nothing.  O(sessions + non-empty cohort lists); the records themselves are not
    checked (the file layer's CRC covers them; _check_invariants() can, in O(state))."""
    cdef uint64_t head = sn_header_bytes(), pos, need, left, got, nlog, i
    cdef uint64_t z[<int>SN_NVEC]
    cdef int64_t mine[<int>SN_NSHAPE]
    cdef uint32_t bom
    cdef const char* at
    cdef int k, lst
    cdef uint64_t NS, NP, NA, NR, NB
    cdef int64_t* sc = h.scalar
    cdef SnapRun run
    cdef Session ses
    cdef uint64_t slot_end, bits_end
    cdef int64_t last, total
    if length < 32:
        raise SnapshotError(f"snapshot truncated: {length} bytes, a header needs {head}")
    if memcmp(buf, SN_MAGIC, 8) != 0:
        raise SnapshotError("not a core snapshot (bad magic)")
    bom = sn_u32(buf + 12)
    if bom != SN_BOM:
        if bom == 0x04030201:
            raise SnapshotError("snapshot written on a machine of the other byte order")
        raise SnapshotError(f"bad byte-order mark {bom:#010x}")
    if sn_u32(buf + 8) != SN_VERSION:
        raise SnapshotError(f"snapshot format version {sn_u32(buf + 8)}; this build reads "
                            f"version {SN_VERSION}")
    if (sn_u32(buf + 16) != head or sn_u32(buf + 20) != SN_NVEC
            or sn_u32(buf + 24) != SN_NSHAPE or sn_u32(buf + 28) != SN_NSCALAR):
        raise SnapshotError(
            f"snapshot header layout ({sn_u32(buf + 16)} bytes, {sn_u32(buf + 20)} vectors, "
            f"{sn_u32(buf + 24)} shape values, {sn_u32(buf + 28)} scalars) is not this "
            f"build's ({head}, {SN_NVEC}, {SN_NSHAPE}, {SN_NSCALAR})")
    if length < head:
        raise SnapshotError(f"snapshot truncated: {length} bytes, the header needs {head}")
    # the policy: its shape value by value (a clear message), then everything
    at = buf + 32
    memcpy(h.shape, at, sizeof(h.shape))
    at += sizeof(h.shape)
    sn_shape(self, mine)
    for k in range(SN_NSHAPE):
        if h.shape[k] != mine[k]:
            raise SnapshotError(f"snapshot taken with {_SN_SHAPE[k]}={h.shape[k]}, this core's "
                                f"policy has {mine[k]}")
    h.digest = sn_u64(at)
    at += 8
    if h.digest != sn_policy_digest(self):
        raise SnapshotError("snapshot taken under a different policy")
    memcpy(h.scalar, at, sizeof(h.scalar))
    at += sizeof(h.scalar)
    # element sizes: the build's structs
    sn_elsizes(z)
    for k in range(SN_NVEC):
        h.elsize[k] = sn_u32(at + 4 * k)
        if h.elsize[k] != z[k]:
            raise SnapshotError(f"snapshot {_SN_VECTORS[k]} elements are {h.elsize[k]} bytes, "
                                f"{z[k]} in this build (a different build)")
    for k in range(SN_NVEC, <int>(sn_pad8(4 * SN_NVEC) // 4)):
        if sn_u32(at + 4 * k) != 0:
            raise SnapshotError("snapshot header padding is not zero")
    at += sn_pad8(4 * SN_NVEC)
    memcpy(h.count, at, sizeof(h.count))
    # extents: each vector inside the data, padding zero, nothing after the last
    pos = head
    for k in range(SN_NVEC):
        left = length - pos
        if h.count[k] > left // z[k]:
            raise SnapshotError(f"snapshot truncated: {_SN_VECTORS[k]} needs {h.count[k]} x "
                                f"{z[k]} bytes at offset {pos}, {left} left")
        got = h.count[k] * z[k]
        need = sn_pad8(got)
        if need > left:
            raise SnapshotError(f"snapshot truncated: {_SN_VECTORS[k]} ends past the data")
        h.offset[k] = pos
        for i in range(got, need):
            if buf[pos + i] != 0:
                raise SnapshotError(f"snapshot padding after {_SN_VECTORS[k]} is not zero")
        pos += need
    if pos != length:
        raise SnapshotError(f"{length - pos} bytes of trailing data after the snapshot")
    # lengths consistent with each other and with the policy's strides
    NS = h.count[SV_SESSIONS]
    NB = h.count[SV_BOOKINGS]
    NP = h.count[SV_PATIENTS]
    NA = h.count[SV_ACCT_HIST]
    NR = h.count[SV_REQUESTS]
    checks = (
        (SV_Q_INIT, NS * <uint64_t>self._n_ch), (SV_Q_LEFT, NS * <uint64_t>self._n_ch),
        (SV_RELEASE, NS * <uint64_t>self._n_ch), (SV_SX, NS),
        (SV_STRIKES, NP * <uint64_t>self._n_ban),
        (SV_CANCELS, NP * <uint64_t>self._cancel_strikes), (SV_PMARKS, NP), (SV_P_TQ, NP),
        (SV_P_RQ, NP), (SV_ACCTS, NA), (SV_A_RQ, NA),
        (SV_EARLY, 0 if self._early_count <= EARLY_INLINE else NA * <uint64_t>self._early_count),
        (SV_ACANCELS, NA * <uint64_t>self._cflag_count), (SV_RQ_COLD, NR),
        (SV_RQ_OPEN, (NR + 63) // 64), (SV_RCOVER, NR if self._cover else 0),
        (SV_WL_OPEN, h.count[SV_WL_OF]), (SV_PURSES, h.count[SV_WALLETS]))
    for k, want in checks:
        if h.count[k] != want:
            raise SnapshotError(f"snapshot inconsistent: {h.count[k]} {_SN_VECTORS[k]}, "
                                f"expected {want}")
    if h.count[SV_WL_OF] not in (0, NS):
        raise SnapshotError(f"snapshot inconsistent: {h.count[SV_WL_OF]} wl_of for {NS} sessions")
    if h.count[SV_WALLETS] not in (0, NP):
        raise SnapshotError(f"snapshot inconsistent: {h.count[SV_WALLETS]} wallets for {NP} "
                            "patients")
    if NS > <uint64_t>MAX_ID or NB > <uint64_t>MAX_ID or NP > <uint64_t>MAX_ID \
            or NA > <uint64_t>MAX_ID or NR > <uint64_t>MAX_ID \
            or h.count[SV_TICKETS] > <uint64_t>MAX_ID:
        raise SnapshotError("snapshot inconsistent: more ids than int32 holds")
    # the slot and bitmap arrays end where the last session's region ends (regions are
    # only ever appended, and grown in place only when last)
    slot_end = 0
    bits_end = 0
    for i in range(NS):
        memcpy(&ses, buf + h.offset[SV_SESSIONS] + i * sizeof(Session), sizeof(Session))
        if ses.slot_off < 0 or ses.capacity < 1:
            raise SnapshotError(f"snapshot session {i} has a bad slot region")
        slot_end = max(slot_end, <uint64_t>ses.slot_off + ses.capacity)
        bits_end = max(bits_end, <uint64_t>ses.bm_off + <uint64_t>bm_size(bm_words(ses.capacity)))
    if slot_end != h.count[SV_SLOT_BK] or bits_end != h.count[SV_BITS]:
        raise SnapshotError(f"snapshot inconsistent: {h.count[SV_SLOT_BK]} slot_bk and "
                            f"{h.count[SV_BITS]} bits, the sessions' regions end at {slot_end} "
                            f"and {bits_end}")
    # the scalars
    if not 0 <= sc[SN_NOW] <= MAX_MS:
        raise SnapshotError(f"snapshot clock {sc[SN_NOW]} is out of range")
    if sc[SN_MONEY] not in (0, 1) or (self._cover and not sc[SN_MONEY]):
        raise SnapshotError(f"snapshot money flag {sc[SN_MONEY]} is inconsistent")
    if sc[SN_MONEY]:
        if h.count[SV_BCOVER] < NB:
            raise SnapshotError(f"snapshot inconsistent: {h.count[SV_BCOVER]} booking covers "
                                f"for {NB} bookings")
    elif h.count[SV_BCOVER]:
        raise SnapshotError("snapshot inconsistent: booking covers without money")
    nlog = 0
    while (<uint64_t>1 << nlog) < h.count[SV_KNOWN] and nlog < 63:
        nlog += 1
    if h.count[SV_KNOWN] == 0:
        if sc[SN_KNOWN_SHIFT] != 64 or sc[SN_N_KNOWN] != 0:
            raise SnapshotError("snapshot inconsistent: known set scalars of an empty table")
    elif ((<uint64_t>1 << nlog) != h.count[SV_KNOWN] or h.count[SV_KNOWN] < 64
          or sc[SN_KNOWN_SHIFT] != 64 - <int64_t>nlog
          or not 0 <= sc[SN_N_KNOWN] <= <int64_t>(h.count[SV_KNOWN] // 2)):
        raise SnapshotError("snapshot inconsistent: known set size, shift or count")
    for k in (SN_SEQ, SN_NCMD, SN_N_MARKS, SN_N_PMARKS):
        if sc[k] < 0:
            raise SnapshotError(f"snapshot {_SN_SCALARS[k]}={sc[k]} is negative")
    for k, most in ((SN_N_FREE, h.count[SV_SLOT_BK]), (SN_N_QUEUED, h.count[SV_TICKETS]),
                    (SN_WQ_DEAD, h.count[SV_WQ]), (SN_WQ_LIVE, h.count[SV_WQ]),
                    (SN_N_OPEN, NR)):
        if sc[k] < 0 or sc[k] > <int64_t>most:
            raise SnapshotError(f"snapshot {_SN_SCALARS[k]}={sc[k]} is outside 0..{most}")
    # the cohort lists: runs of ascending sessions, lengths adding up to the tickets
    for lst in range(2):
        k = SV_FAIR_RUNS if lst == 0 else SV_SLOW_RUNS
        last = -1
        total = 0
        for i in range(h.count[k]):
            memcpy(&run, buf + h.offset[k] + i * sizeof(SnapRun), sizeof(SnapRun))
            if run.session <= last or run.session >= <int64_t>NS or run.n < 1:
                raise SnapshotError(f"snapshot {_SN_VECTORS[k]} run {i} is bad")
            last = run.session
            total += run.n
        if total != <int64_t>h.count[k + 1]:
            raise SnapshotError(f"snapshot {_SN_VECTORS[k]} add up to {total} tickets, "
                                f"{h.count[k + 1]} saved")
    return 0


cdef void sn_load_runs(vector[vector[int32_t]]& lists, uint64_t ns, const char* runs,
                       uint64_t n_runs, const char* data) except *:
    """Rebuild a per-session vector of lists from its runs (checked by sn_parse)."""
    cdef uint64_t i
    cdef SnapRun run
    lists.resize(ns)
    for i in range(n_runs):
        memcpy(&run, runs + i * sizeof(SnapRun), sizeof(SnapRun))
        se_snap_load(lists[run.session], data, <size_t>run.n)
        data += <size_t>run.n * sizeof(int32_t)


cdef sn_restore(Core self, object data):
    """Core.restore(data): validate everything, then copy every vector in."""
    cdef Py_buffer view
    cdef SnapHead h
    cdef int64_t saved[<int>SN_NSCALAR]
    cdef const char* buf
    cdef const uint64_t* o
    cdef const uint64_t* n
    cdef uint64_t i
    if not sn_fresh(self):
        raise InvalidState("restore needs a freshly constructed Core: this one has state")
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except TypeError:
        raise InvalidType(f"data must be bytes, bytearray or memoryview, not "
                          f"{type(data).__name__}") from None
    except BufferError as exc:
        raise InvalidArgument(f"data must be a contiguous buffer: {exc}") from None
    try:
        buf = <const char*>view.buf
        sn_parse(self, buf, <uint64_t>view.len, &h)
        o = h.offset
        n = h.count
        sn_scalars_get(self, saved)
        try:
            self._drop_names()
            se_snap_load(self._sessions, buf + o[SV_SESSIONS], n[SV_SESSIONS])
            se_snap_load(self._q_init, buf + o[SV_Q_INIT], n[SV_Q_INIT])
            se_snap_load(self._q_left, buf + o[SV_Q_LEFT], n[SV_Q_LEFT])
            se_snap_load(self._release, buf + o[SV_RELEASE], n[SV_RELEASE])
            se_snap_load(self._slot_bk, buf + o[SV_SLOT_BK], n[SV_SLOT_BK])
            se_snap_load(self._bits, buf + o[SV_BITS], n[SV_BITS])
            se_snap_load(self._bookings, buf + o[SV_BOOKINGS], n[SV_BOOKINGS])
            se_snap_load(self._patients, buf + o[SV_PATIENTS], n[SV_PATIENTS])
            se_snap_load(self._strikes, buf + o[SV_STRIKES], n[SV_STRIKES])
            se_snap_load(self._cancels, buf + o[SV_CANCELS], n[SV_CANCELS])
            se_snap_load(self._acct_hist, buf + o[SV_ACCT_HIST], n[SV_ACCT_HIST])
            se_snap_load(self._timers, buf + o[SV_TIMERS], n[SV_TIMERS])
            se_snap_load(self._events, buf + o[SV_EVENTS], n[SV_EVENTS])
            se_snap_load(self._known, buf + o[SV_KNOWN], n[SV_KNOWN])
            se_snap_load(self._sx, buf + o[SV_SX], n[SV_SX])
            sn_load_runs(self._fair, n[SV_SESSIONS], buf + o[SV_FAIR_RUNS], n[SV_FAIR_RUNS],
                         buf + o[SV_FAIR])
            sn_load_runs(self._slow, n[SV_SESSIONS], buf + o[SV_SLOW_RUNS], n[SV_SLOW_RUNS],
                         buf + o[SV_SLOW])
            se_snap_load(self._accts, buf + o[SV_ACCTS], n[SV_ACCTS])
            se_snap_load(self._early, buf + o[SV_EARLY], n[SV_EARLY])
            se_snap_load(self._acancels, buf + o[SV_ACANCELS], n[SV_ACANCELS])
            se_snap_load(self._pmarks, buf + o[SV_PMARKS], n[SV_PMARKS])
            se_snap_load(self._p_tq, buf + o[SV_P_TQ], n[SV_P_TQ])
            se_snap_load(self._tickets, buf + o[SV_TICKETS], n[SV_TICKETS])
            se_snap_load(self._flag_log, buf + o[SV_FLAG_LOG], n[SV_FLAG_LOG])
            se_snap_load(self._requests, buf + o[SV_REQUESTS], n[SV_REQUESTS])
            se_snap_load(self._rq_cold, buf + o[SV_RQ_COLD], n[SV_RQ_COLD])
            se_snap_load(self._rq_open, buf + o[SV_RQ_OPEN], n[SV_RQ_OPEN])
            se_snap_load(self._wq, buf + o[SV_WQ], n[SV_WQ])
            se_snap_load(self._wls, buf + o[SV_WLS], n[SV_WLS])
            se_snap_load(self._wl_of, buf + o[SV_WL_OF], n[SV_WL_OF])
            se_snap_load(self._wl_open, buf + o[SV_WL_OPEN], n[SV_WL_OPEN])
            se_snap_load(self._p_rq, buf + o[SV_P_RQ], n[SV_P_RQ])
            se_snap_load(self._a_rq, buf + o[SV_A_RQ], n[SV_A_RQ])
            se_snap_load(self._filled, buf + o[SV_FILLED], n[SV_FILLED])
            se_snap_load(self._returns, buf + o[SV_RETURNS], n[SV_RETURNS])
            se_snap_load(self._wallets, buf + o[SV_WALLETS], n[SV_WALLETS])
            se_snap_load(self._purses, buf + o[SV_PURSES], n[SV_PURSES])
            se_snap_load(self._bcover, buf + o[SV_BCOVER], n[SV_BCOVER])
            se_snap_load(self._rcover, buf + o[SV_RCOVER], n[SV_RCOVER])
            se_snap_load(self._bills, buf + o[SV_BILLS], n[SV_BILLS])
            se_snap_load(self._moves, buf + o[SV_MOVES], n[SV_MOVES])
            sn_scalars_set(self, h.scalar)
        except BaseException:
            # only an allocation can fail here: back to the fresh, empty core
            sn_clear(self)
            sn_scalars_set(self, saved)
            raise
    finally:
        PyBuffer_Release(&view)
