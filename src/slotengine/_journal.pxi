# The command journal (issue 6, docs/durability.md "Records" and "Core API"):
# the record writer every state-changing command calls, CRC-32C, and replay.
# Included at the end of _core.pyx (the Core methods are thin wrappers of j_*).
#
# A command checks for a failed journal first, validates its arguments, then
# stages its record before it changes anything (j_stage: room, rotate, header,
# note; the command writes its payload), runs, then commits it (j_commit: CRC,
# a compiler barrier, size last, seq + 1, maybe sync).  A command that raises
# never commits: its staged bytes are overwritten by the next record and the
# size word stays 0.  With the journal off (_jst == J_OFF) a hot command pays
# one predictable branch on _jst.
#
# Every payload is a multiple of 8 bytes, so its length is
# size - 24 - round8(nlen).  Hot ops have packed payloads (below); the others
# are int64 vectors in the def method's argument order (ids dense, times ms),
# counted arrays as a count then the values.  Little-endian hosts only.

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uintptr_t

from slotengine.errors import CorruptJournal, JournalError, SlotEngineError

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    #error "slotengine's journal records are little-endian: big-endian hosts are not supported"
    #endif

    /* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the SSE4.2 crc32
       instruction when the CPU has it, else slicing-by-8 tables.  se_crc32c
       takes and returns the finished value (pre/post inversion inside), as
       zlib.crc32 does, so calls chain. */
    static uint32_t se_crc_tab[8][256];
    static int se_crc_hw = -1;          /* -1: not yet probed */

    static void se_crc_init(void) {
        uint32_t i, c;
        int k, t;
        for (i = 0; i < 256; i++) {
            c = i;
            for (k = 0; k < 8; k++)
                c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
            se_crc_tab[0][i] = c;
        }
        /* tab[t][i]: the CRC of byte i followed by t zero bytes */
        for (t = 1; t < 8; t++)
            for (i = 0; i < 256; i++) {
                c = se_crc_tab[t - 1][i];
                se_crc_tab[t][i] = (c >> 8) ^ se_crc_tab[0][c & 0xFF];
            }
    #if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
        __builtin_cpu_init();
        se_crc_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    #else
        se_crc_hw = 0;
    #endif
    }

    static uint32_t se_crc_sw(uint32_t c, const unsigned char* p, size_t n) {
        uint64_t w;
        while (n && ((uintptr_t)p & 7)) { c = (c >> 8) ^ se_crc_tab[0][(c ^ *p++) & 0xFF]; n--; }
        while (n >= 8) {
            memcpy(&w, p, 8);
            w ^= c;
            c = se_crc_tab[7][w & 0xFF] ^ se_crc_tab[6][(w >> 8) & 0xFF]
              ^ se_crc_tab[5][(w >> 16) & 0xFF] ^ se_crc_tab[4][(w >> 24) & 0xFF]
              ^ se_crc_tab[3][(w >> 32) & 0xFF] ^ se_crc_tab[2][(w >> 40) & 0xFF]
              ^ se_crc_tab[1][(w >> 48) & 0xFF] ^ se_crc_tab[0][w >> 56];
            p += 8;
            n -= 8;
        }
        while (n--) c = (c >> 8) ^ se_crc_tab[0][(c ^ *p++) & 0xFF];
        return c;
    }

    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    #define SE_CRC_HW 1
    __attribute__((target("sse4.2")))
    static uint32_t se_crc_hw8(uint32_t crc, const unsigned char* p, size_t n) {
        uint64_t c = crc, w;
        while (n && ((uintptr_t)p & 7)) { c = __builtin_ia32_crc32qi((uint32_t)c, *p++); n--; }
        while (n >= 8) {
            memcpy(&w, p, 8);
            c = __builtin_ia32_crc32di(c, w);
            p += 8;
            n -= 8;
        }
        while (n--) c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        return (uint32_t)c;
    }
    #endif

    static inline uint32_t se_crc32c(uint32_t crc, const void* data, size_t n) {
        const unsigned char* p = (const unsigned char*)data;
        uint32_t c = ~crc;
        if (__builtin_expect(se_crc_hw < 0, 0)) se_crc_init();
    #ifdef SE_CRC_HW
        if (se_crc_hw) return ~se_crc_hw8(c, p, n);
    #endif
        return ~se_crc_sw(c, p, n);
    }

    static uint32_t se_crc32c_soft(uint32_t crc, const void* data, size_t n) {
        if (se_crc_hw < 0) se_crc_init();
        return ~se_crc_sw(~crc, (const unsigned char*)data, n);
    }

    static inline int se_crc_uses_hw(void) {
        if (se_crc_hw < 0) se_crc_init();
        return se_crc_hw;
    }

    /* Unaligned-safe little-endian loads and stores (one mov each on x86). */
    static inline void se_st16(char* p, uint16_t v) { memcpy(p, &v, 2); }
    static inline void se_st32(char* p, uint32_t v) { memcpy(p, &v, 4); }
    static inline void se_st64(char* p, int64_t v) { memcpy(p, &v, 8); }
    static inline uint16_t se_ld16(const char* p) { uint16_t v; memcpy(&v, p, 2); return v; }
    static inline uint32_t se_ld32(const char* p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline int32_t se_ldi32(const char* p) { int32_t v; memcpy(&v, p, 4); return v; }
    static inline int64_t se_ld64(const char* p) { int64_t v; memcpy(&v, p, 8); return v; }
    static inline uint64_t se_ldu64(const char* p) { uint64_t v; memcpy(&v, p, 8); return v; }
    static inline void se_stu64(char* p, uint64_t v) { memcpy(p, &v, 8); }

    /* Prefault a large record's pages in one call (Linux 5.14+; a hint: errors are
       ignored, the stores fault the pages in anyway). */
    #ifdef __linux__
    #include <sys/mman.h>
    #include <unistd.h>
    #endif
    #ifndef MADV_POPULATE_WRITE
    #define MADV_POPULATE_WRITE 23
    #endif
    static inline void se_prefault(char* p, size_t n) {
    #if defined(__linux__)
        static uintptr_t page = 0;
        uintptr_t a;
        if (!page) page = (uintptr_t)sysconf(_SC_PAGESIZE);
        a = (uintptr_t)p & ~(page - 1);
        (void)madvise((void*)a, ((uintptr_t)p + n) - a, MADV_POPULATE_WRITE);
    #endif
    }

    /* Publish a record: everything before it is stored first (a compiler
       barrier is enough for a killed process: stores retire in program order
       and a kill does not undo them), then the size word. */
    static inline void se_publish(char* rec, uint32_t size) {
        __asm__ __volatile__("" ::: "memory");
        memcpy(rec, &size, 4);
    }
    """
    uint32_t se_crc32c(uint32_t crc, const void* data, size_t n) nogil
    uint32_t se_crc32c_soft(uint32_t crc, const void* data, size_t n) nogil
    int se_crc_uses_hw() nogil
    void se_st16(char* p, uint16_t v) nogil
    void se_st32(char* p, uint32_t v) nogil
    void se_st64(char* p, int64_t v) nogil
    void se_stu64(char* p, uint64_t v) nogil
    uint16_t se_ld16(const char* p) nogil
    uint32_t se_ld32(const char* p) nogil
    int32_t se_ldi32(const char* p) nogil
    int64_t se_ld64(const char* p) nogil
    uint64_t se_ldu64(const char* p) nogil
    void se_publish(char* rec, uint32_t size) nogil
    void se_prefault(char* p, size_t n) nogil


cdef enum:  # Core._jst
    J_OFF = 0
    J_ON = 1
    J_FAILED = 2

cdef enum:
    J_HEAD = 24                     # record header bytes
    J_NOTE_MAX = 1 << 30            # the largest note journal_note accepts

# Op codes: on disk, never renumber.  Hot ops (1..7) have packed payloads and
# replay in C; the rest are int64 vectors replayed through the def methods.
cdef enum:
    OP_BOOK = 1             # t i64, account i32, patient i32, session i32, channel u16, hold u16
    OP_BOOK_MANY = 2        # n i64, hold i64, then columns of n: nows i64, accounts i32,
                            # patients i32, sessions i32, channels u8 (21 bytes a row: the
                            # journal's bytes are most of a journaled batch's cost)
    OP_CONFIRM = 3          # booking i32, account i32, t i64
    OP_CANCEL = 4           # booking i32, account i32, t i64
    OP_CHECK_IN = 5         # booking i32, 0 i32, t i64
    OP_ADVANCE = 6          # t i64
    OP_DRAIN = 7            # (nothing): drain_events / drain_events_array with events
    OP_ADD_SESSION = 16     # hospital, department, tier, day, starts_at, end_at, rollover_at,
                            # cancel_cutoff_at, slot_ms, capacity, fee, now, doctor,
                            # n_channels, quotas[n], release[n]
    OP_ADD_CAPACITY = 17    # session, n, channel, now
    OP_SUSPEND = 18         # session, now
    OP_BLOCK_SLOT = 19      # session, slot_no, now
    OP_UNBLOCK_SLOT = 20    # session, slot_no, now
    OP_ENSURE_PATIENTS = 21 # n (only when it grows)
    OP_ENSURE_ACCOUNTS = 22 # n (only when it grows)
    OP_MARK_KNOWN = 23      # patient, hospital, now
    OP_FLAG = 24            # kind, key, reason, until, now
    OP_UNFLAG = 25          # kind, key, now
    OP_BLOCK = 26           # kind, key, until, now
    OP_UNBLOCK = 27         # kind, key, now
    OP_IMPORT_BLACKLIST = 28  # now, n, kinds[n], keys[n], untils[n]
    OP_CANCEL_TICKET = 29   # ticket, account, now
    OP_JOIN_WAITLIST = 30   # account, patient, channel, klass, deadline, now, n, sessions[n]
    OP_CANCEL_WAITLIST = 31 # request, account, now
    OP_SETTLE = 32          # booking, amount, now
    OP_TOP_UP = 33          # patient, amount, now
    OP_REFUND = 34          # patient, amount, now
    OP_OPEN_LINE = 35       # patient, kind, limit (-1: the kind's start), now
    OP_CLOSE_LINE = 36      # patient, now
    OP_SET_LIMIT = 37       # patient, limit, now
    OP_REPAY = 38           # patient, amount, now
    OP_RNG_NEXT = 39        # (nothing)
    OP_LAST = 39

# Fixed-arity int64 ops: op -> (Core method, number of values).
cdef dict _J_CALLS = {
    OP_ADD_CAPACITY: ("add_capacity", 4), OP_SUSPEND: ("suspend", 2),
    OP_BLOCK_SLOT: ("block_slot", 3), OP_UNBLOCK_SLOT: ("unblock_slot", 3),
    OP_ENSURE_PATIENTS: ("ensure_patients", 1), OP_ENSURE_ACCOUNTS: ("ensure_accounts", 1),
    OP_MARK_KNOWN: ("mark_known", 3), OP_FLAG: ("flag", 5), OP_UNFLAG: ("unflag", 3),
    OP_BLOCK: ("block", 4), OP_UNBLOCK: ("unblock", 3), OP_CANCEL_TICKET: ("cancel_ticket", 3),
    OP_CANCEL_WAITLIST: ("cancel_waitlist", 3), OP_SETTLE: ("settle", 3),
    OP_TOP_UP: ("top_up", 3), OP_REFUND: ("refund", 3), OP_OPEN_LINE: ("open_line", 4),
    OP_CLOSE_LINE: ("close_line", 2), OP_SET_LIMIT: ("set_limit", 3), OP_REPAY: ("repay", 3),
    OP_RNG_NEXT: ("rng_next", 0),
}
# Every op's name, for error messages.
cdef dict _J_NAMES = {
    OP_BOOK: "book", OP_BOOK_MANY: "book_many", OP_CONFIRM: "confirm", OP_CANCEL: "cancel",
    OP_CHECK_IN: "check_in", OP_ADVANCE: "advance", OP_DRAIN: "drain_events",
    OP_ADD_SESSION: "add_session", OP_IMPORT_BLACKLIST: "import_blacklist",
    OP_JOIN_WAITLIST: "join_waitlist", **{op: name for op, (name, _) in _J_CALLS.items()}}

# Rows of one column record (book_many, import_blacklist): the record's size must fit
# its u32 field (40 bytes a row bounds both).
cdef int64_t J_MANY_MAX = (0xFFFFFFFF - J_HEAD - 16 - J_NOTE_MAX - 8) // 40


cdef uint32_t j_crc_of(object data, object crc, bint soft) except? 0xFFFFFFFF:
    cdef Py_buffer view
    cdef int64_t c = _int(crc, "crc")
    cdef uint32_t out
    if not 0 <= c <= 0xFFFFFFFF:
        raise InvalidArgument(f"crc={c} is outside 0..2**32-1")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        with nogil:
            if soft:
                out = se_crc32c_soft(<uint32_t>c, view.buf, <size_t>view.len)
            else:
                out = se_crc32c(<uint32_t>c, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return out


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli) of a bytes-like ``data``, continuing from ``crc`` (as
    ``zlib.crc32``): ``crc32c(b"123456789") == 0xE3069283``."""
    return j_crc_of(data, crc, False)


def _crc32c_soft(data, crc=0):
    """crc32c by the table fallback (tests compare both paths)."""
    return j_crc_of(data, crc, True)


def _crc32c_hardware():
    """Whether crc32c uses the SSE4.2 instruction."""
    return bool(se_crc_uses_hw())


# -- the writer ------------------------------------------------------------------------

cdef int j_raise(Core self) except -1:
    """The journal is not writable: the failure, or (a bug) a stage while off."""
    if self._jst == J_FAILED:
        raise JournalError(self._jmsg)
    raise JournalError("the journal is not open")


cdef int j_attach(Core self, object buf, object pos) except -1:
    """Journal into ``buf`` from byte ``pos``: take a writable view of it, then release the
    view of the old buffer (if any).  Nothing changes if this raises."""
    cdef Py_buffer view
    cdef int64_t p = _int(pos, "pos")
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    if p < 0 or p > view.len or p & 7 or (<uintptr_t>view.buf) & 7:
        n = view.len
        PyBuffer_Release(&view)
        raise InvalidArgument(f"journal pos={p} must be a multiple of 8 in 0..{n}, in an "
                              "8-aligned buffer")
    if self._jheld:
        PyBuffer_Release(&self._jview)
    self._jview = view
    self._jheld = True
    self._jbuf = <char*>view.buf
    self._jcap = view.len
    self._jpos = p
    self._jrec = NULL
    return 0


cdef void j_detach(Core self) noexcept:
    if self._jheld:
        PyBuffer_Release(&self._jview)
        self._jheld = False
    self._jbuf = NULL
    self._jcap = 0
    self._jrec = NULL


cdef int j_rotate(Core self, int64_t need) except -1:
    """Make room for a record of ``need`` bytes: ``rotate(need) -> (buf, pos)``."""
    if self._jrotate is None:
        raise JournalError(f"the journal buffer is full: a record needs {need} bytes, "
                           f"{self._jcap - self._jpos} are left")
    res = self._jrotate(need)
    try:
        buf, pos = res
    except (TypeError, ValueError):
        raise JournalError(f"rotate() must return (buf, pos), not {res!r}") from None
    j_attach(self, buf, pos)
    if need > self._jcap - self._jpos:
        raise JournalError(f"rotate() gave {self._jcap - self._jpos} bytes for a record of "
                           f"{need}")
    return 0


cdef char* j_stage(Core self, uint16_t op, int64_t plen) except NULL:
    """Write a record's header, note and padding at the journal position (size 0,
    no CRC yet) and return it; the caller writes ``plen`` payload bytes at +24."""
    cdef int64_t nlen = self._jnlen
    cdef int64_t size = J_HEAD + plen + ((nlen + 7) & ~7)
    cdef char* r
    if self._jst != J_ON:
        j_raise(self)
    if size > self._jcap - self._jpos:
        j_rotate(self, size)
    r = self._jbuf + self._jpos
    if size >= 65536:
        se_prefault(r, size)
    se_st32(r, 0)
    se_stu64(r + 8, self._jseq)
    se_st16(r + 16, op)
    if self._jnote is None:
        se_st16(r + 18, 0)
        se_st32(r + 20, 0)
    else:
        se_st16(r + 18, 1)
        se_st32(r + 20, <uint32_t>nlen)
        memcpy(r + J_HEAD + plen, PyBytes_AS_STRING(self._jnote), nlen)
        memset(r + J_HEAD + plen + nlen, 0, size - J_HEAD - plen - nlen)
    self._jrec = r
    self._jsize = size
    return r


cdef int j_commit(Core self) except -1:
    """CRC the staged record, publish its size, move on; sync every sync_every records."""
    cdef char* r = self._jrec
    cdef uint32_t size = <uint32_t>self._jsize
    se_st32(r + 4, se_crc32c(0, r + 8, size - 8))
    se_publish(r, size)
    self._jrec = NULL
    self._jpos += size
    self._jseq += 1
    if self._jnote is not None:
        self._jnote = None
        self._jnlen = 0
    if self._jsync_every > 0:
        self._jsync_n += 1
        if self._jsync_n >= self._jsync_every:
            self._jsync_n = 0
            self._jsync()
    return 0


cdef inline int j_end(Core self) except -1:
    """Commit the record a command staged (nothing when the journal is off)."""
    if self._jrec != NULL:
        j_commit(self)
    return 0


cdef int j_rare(Core self, uint16_t op, int n, int64_t v0, int64_t v1, int64_t v2,
                int64_t v3, int64_t v4) except -1:
    """Stage an int64-vector record of the first ``n`` (<= 5) values."""
    cdef int64_t v[5]
    cdef char* r = j_stage(self, op, 8 * n)
    v[0] = v0
    v[1] = v1
    v[2] = v2
    v[3] = v3
    v[4] = v4
    memcpy(r + J_HEAD, v, 8 * n)
    return 0


cdef int j_add_session(Core self, int64_t h, int64_t d, int64_t tier, int64_t day,
                       int64_t start, int64_t end, int64_t roll, int64_t cutoff, int64_t sms,
                       int64_t cap, int64_t fee, int64_t t, int64_t doc, list qs,
                       list rel) except -1:
    cdef int64_t n = len(qs), i
    cdef char* r = j_stage(self, OP_ADD_SESSION, 8 * (14 + 2 * n))
    cdef int64_t head[14]
    head[:] = [h, d, tier, day, start, end, roll, cutoff, sms, cap, fee, t, doc, n]
    memcpy(r + J_HEAD, head, sizeof(head))
    r += J_HEAD + sizeof(head)
    for i in range(n):
        se_st64(r + 8 * i, qs[i])
        se_st64(r + 8 * (n + i), rel[i])
    return 0


cdef int j_columns(Core self, uint16_t op, int64_t n, int64_t lead0, int64_t lead1,
                   int k, const int64_t** cols) except -1:
    """Stage ``lead0, lead1`` then ``k`` int64 columns of ``n`` values (memcpy each)."""
    cdef char* r
    cdef int i
    if n > J_MANY_MAX:
        raise InvalidArgument(f"{n} rows do not fit one journal record (at most {J_MANY_MAX})")
    r = j_stage(self, op, 16 + 8 * k * n)
    se_st64(r + J_HEAD, lead0)
    se_st64(r + J_HEAD + 8, lead1)
    if n:
        for i in range(k):
            memcpy(r + J_HEAD + 16 + 8 * i * n, cols[i], 8 * n)
    return 0


cdef int j_many(Core self, int64_t n, bint h) except -1:
    """Stage book_many's record (room, header, n, hold); j_many_fill writes the rows after
    the batch ran, so 21 bytes a row do not sit in the cache the batch works in."""
    cdef char* r
    if n > J_MANY_MAX:
        raise InvalidArgument(f"{n} rows do not fit one journal record (at most {J_MANY_MAX})")
    r = j_stage(self, OP_BOOK_MANY, (16 + 21 * n + 7) & ~7)
    se_st64(r + J_HEAD, n)
    se_st64(r + J_HEAD + 8, h)
    return 0


cdef void j_many_fill(Core self, int64_t n, const int64_t* va, const int64_t* vp,
                      const int64_t* vs, const int64_t* vc, const int64_t* vt) noexcept nogil:
    """The staged book_many record's columns, narrowed (validated ids fit int32)."""
    cdef char* r = self._jrec + J_HEAD + 16
    cdef int32_t* col
    cdef uint8_t* ch
    cdef int64_t i
    memcpy(r, vt, 8 * n)
    col = <int32_t*>(r + 8 * n)     # 4-aligned: the buffer is 8-aligned
    for i in range(n):
        col[i] = <int32_t>va[i]
    col += n
    for i in range(n):
        col[i] = <int32_t>vp[i]
    col += n
    for i in range(n):
        col[i] = <int32_t>vs[i]
    ch = <uint8_t*>(col + n)
    for i in range(n):
        ch[i] = <uint8_t>vc[i]
    memset(ch + n, 0, ((21 * n + 7) & ~7) - 21 * n)


cdef int j_join(Core self, int32_t a, int32_t p, int32_t c, int64_t k, int64_t dl, int64_t t,
                const int32_t* cands, int32_t n) except -1:
    cdef char* r = j_stage(self, OP_JOIN_WAITLIST, 8 * (7 + n))
    cdef int32_t i
    cdef int64_t head[7]
    head[:] = [a, p, c, k, dl, t, n]
    memcpy(r + J_HEAD, head, sizeof(head))
    for i in range(n):
        se_st64(r + J_HEAD + sizeof(head) + 8 * i, cands[i])
    return 0


# Hot commands while journaling: stage, run, commit (Core.book & co. branch here).

cdef Result j_book(Core self, int32_t a, int32_t p, int32_t sid, int32_t c, int64_t t,
                   bint h):
    cdef char* r = j_stage(self, OP_BOOK, 24)
    cdef BookOut out
    cdef int code
    cdef Result res
    se_st64(r + 24, t)
    se_st32(r + 32, <uint32_t>a)
    se_st32(r + 36, <uint32_t>p)
    se_st32(r + 40, <uint32_t>sid)
    se_st16(r + 44, <uint16_t>c)
    se_st16(r + 46, <uint16_t>h)
    if self._cover:
        se_prefetch(&self._purses[p])
    out.slot = -1
    out.booking = -1
    out.ticket = -1
    out.retry = 0
    code = self._book(a, p, sid, c, t, h, &out)
    res = _result(code, sid, out.slot, out.booking, &self._sessions[sid])
    res._ticket = out.ticket
    res._retry = out.retry
    j_commit(self)
    return res


cdef Result j_book_def(Core self, object account, object patient, object session,
                       object channel, object now, object hold):
    """Core.book while journaling (or failed): refuse first, then validate as book does."""
    if self._jst == J_FAILED:
        j_raise(self)
    cdef int32_t a = self._account_id(account)
    cdef int32_t p = self._patient_id(patient)
    cdef int32_t sid = self._session_id(session)
    cdef int32_t c = self._channel_id(channel)
    cdef int64_t t = self._check_now(now)
    return j_book(self, a, p, sid, c, t, _truth(hold))


cdef Result j_pair_def(Core self, uint16_t op, object booking, object account, object now):
    """Core.confirm / cancel / check_in while journaling (or failed)."""
    if self._jst == J_FAILED:
        j_raise(self)
    cdef int32_t b = self._booking_id(booking)
    cdef int32_t a = 0 if op == OP_CHECK_IN else self._account_id(account)
    cdef int64_t t = self._check_now(now)
    if op == OP_CONFIRM:
        return self._result_for(j_confirm(self, b, a, t), b)
    if op == OP_CANCEL:
        return self._result_for(j_cancel(self, b, a, t), b)
    return self._result_for(j_check_in(self, b, t), b)


cdef inline char* j_pair(Core self, uint16_t op, int32_t b, int32_t a, int64_t t) except NULL:
    cdef char* r = j_stage(self, op, 16)
    se_st32(r + 24, <uint32_t>b)
    se_st32(r + 28, <uint32_t>a)
    se_st64(r + 32, t)
    return r


cdef int j_confirm(Core self, int32_t b, int32_t a, int64_t t) except -1:
    cdef int code
    j_pair(self, OP_CONFIRM, b, a, t)
    code = self._confirm(b, a, t)
    j_commit(self)
    return code


cdef int j_cancel(Core self, int32_t b, int32_t a, int64_t t) except -1:
    cdef int code
    j_pair(self, OP_CANCEL, b, a, t)
    code = self._cancel(b, a, t)
    j_commit(self)
    return code


cdef int j_check_in(Core self, int32_t b, int64_t t) except -1:
    cdef int code
    j_pair(self, OP_CHECK_IN, b, 0, t)
    code = self._check_in(b, t)
    j_commit(self)
    return code


cdef int j_advance(Core self, int64_t t) except -1:
    cdef char* r = j_stage(self, OP_ADVANCE, 8)
    se_st64(r + 24, t)
    self._begin(t)
    j_commit(self)
    return 0


cdef int j_drain(Core self) except -1:
    """Stage a drain record when there are events to drop (else nothing changes)."""
    if self._jst != J_ON:
        j_raise(self)
    if self._events.size():
        j_stage(self, OP_DRAIN, 0)
    return 0


# -- the Core methods (journal_open & co.) -------------------------------------------

cdef int j_open(Core self, object buf, object pos, object next_seq, object sync_every,
                object sync, object rotate) except -1:
    cdef int64_t k = _int(sync_every, "sync_every")
    if self._jst == J_ON:
        raise InvalidState("the journal is already open")
    if self._jst == J_FAILED:
        raise JournalError(self._jmsg)
    if isinstance(next_seq, bool) or not isinstance(next_seq, int) \
            or not 1 <= next_seq < 2**64:
        raise InvalidArgument(f"next_seq={next_seq!r} must be an int in 1..2**64-1")
    if k < 0:
        raise InvalidArgument(f"sync_every={k} must be >= 0")
    if k > 0 and not callable(sync):
        raise InvalidType("sync must be callable when sync_every > 0")
    if rotate is not None and not callable(rotate):
        raise InvalidType("rotate must be callable or None")
    j_attach(self, buf, pos)
    self._jseq = next_seq
    self._jsync_every = k
    self._jsync_n = 0
    self._jsync = sync
    self._jrotate = rotate
    self._jst = J_ON
    return 0


cdef tuple j_close(Core self):
    j_detach(self)
    self._jsync = None
    self._jrotate = None
    if self._jst == J_ON:
        self._jst = J_OFF
    return (self._jpos, self._jseq)


cdef int j_fail(Core self, object message) except -1:
    j_detach(self)
    self._jsync = None
    self._jrotate = None
    self._jmsg = str(message)
    self._jst = J_FAILED
    return 0


cdef int j_note(Core self, object payload) except -1:
    if payload is None:
        self._jnote = None
        self._jnlen = 0
        return 0
    if isinstance(payload, (bytearray, memoryview)):
        payload = bytes(payload)
    elif type(payload) is not bytes:
        raise InvalidType(f"a journal note must be bytes or None, not {type(payload).__name__}")
    if PyBytes_GET_SIZE(payload) > J_NOTE_MAX:
        raise InvalidArgument(f"a journal note holds at most {J_NOTE_MAX} bytes")
    self._jnote = payload
    self._jnlen = PyBytes_GET_SIZE(payload)
    return 0


# -- replay ----------------------------------------------------------------------------

cdef int j_fits(const char* r, int64_t off, int64_t end, bint check_op) noexcept nogil:
    """Record at r (offset off): sane size inside end and a matching CRC."""
    cdef uint32_t size = se_ld32(r)
    cdef uint32_t nlen
    if size < J_HEAD or size & 7 or size > end - off:
        return 0
    if check_op:
        nlen = se_ld32(r + 20)
        if se_ld16(r + 16) == 0 or se_ld16(r + 16) > OP_LAST or se_ld16(r + 18) > 1 \
                or ((<uint64_t>nlen + 7) & ~(<uint64_t>7)) > size - J_HEAD:
            return 0
    return se_ld32(r + 4) == se_crc32c(0, r + 8, size - 8)


cdef object j_find(object buf, object pos, object end):
    cdef Py_buffer view
    cdef int64_t p = _int(pos, "pos"), e = _int(end, "end"), off
    cdef const char* base
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if p < 0 or e < p or e > view.len:
            raise InvalidArgument(f"need 0 <= pos <= end <= {view.len}, not pos={p} end={e}")
        base = <const char*>view.buf
        off = (p & ~(<int64_t>7)) + 8
        with nogil:
            while off + J_HEAD <= e:
                if se_ld32(base + off) and j_fits(base + off, off, e, True):
                    break
                off += 8
        return off if off + J_HEAD <= e else -1
    finally:
        PyBuffer_Release(&view)


cdef int j_bad_apply(int64_t off, uint64_t seq, int op, str why) except -1:
    raise CorruptJournal(f"journal record {seq} ({_J_NAMES.get(op, op)}) at offset {off} does "
                         f"not apply: {why}", "", off)


cdef inline bint j_ok_time(Core self, int64_t t) noexcept nogil:
    return self._now <= t <= MAX_MS


cdef int j_exec_many(Core self, const char* pl, int64_t plen, int64_t off,
                     uint64_t seq) except -1:
    """Replay a book_many record; 1 when its payload does not decode."""
    cdef int64_t n, h, i, prev
    cdef int64_t* col
    cdef vector[int64_t] cols
    if plen < 16:
        return 1
    n = se_ld64(pl)
    h = se_ld64(pl + 8)
    if n < 0 or n > J_MANY_MAX or plen != ((16 + 21 * n + 7) & ~7) or not 0 <= h <= 1:
        return 1
    if n == 0:
        return 0
    cols.resize(5 * n)     # widened back to book_many's int64 columns
    col = cols.data()
    pl += 16
    memcpy(col + 4 * n, pl, 8 * n)
    for i in range(3 * n):
        col[i] = se_ldi32(pl + 8 * n + 4 * i)
    for i in range(n):
        col[3 * n + i] = (<const uint8_t*>pl)[20 * n + i]
    prev = self._now
    for i in range(n):
        if not (0 <= col[i] < <int64_t>self._acct_hist.size()
                and 0 <= col[n + i] < <int64_t>self._patients.size()
                and 0 <= col[2 * n + i] < <int64_t>self._sessions.size()
                and col[3 * n + i] < self._n_ch
                and prev <= col[4 * n + i] <= MAX_MS):
            j_bad_apply(off, seq, OP_BOOK_MANY, f"row {i} is out of range")
        prev = col[4 * n + i]
    self._book_rows(col, col + n, col + 2 * n, col + 3 * n, col + 4 * n, n, h != 0,
                    NULL, NULL, NULL, NULL, NULL, NULL)
    return 0


cdef int j_exec_rare(Core self, int op, const char* pl, int64_t plen, int64_t off,
                     uint64_t seq) except -1:
    """Replay an int64-vector record through its def method; 1 when it does not decode."""
    cdef int64_t k, n, i
    if plen & 7:
        return 1
    k = plen // 8
    vals = [se_ld64(pl + 8 * i) for i in range(k)]
    try:
        if op == OP_ADD_SESSION:
            if k < 14:
                return 1
            n = vals[13]
            if n < 0 or k != 14 + 2 * n:
                return 1
            self.add_session(*vals[:11], vals[14:14 + n], vals[14 + n:], vals[11], vals[12])
        elif op == OP_IMPORT_BLACKLIST:
            if k < 2:
                return 1
            n = vals[1]
            if n < 0 or k != 2 + 3 * n:
                return 1
            self.import_blacklist(np.array(vals[2:2 + n], dtype=np.int64),
                                  np.array(vals[2 + n:2 + 2 * n], dtype=np.int64),
                                  np.array(vals[2 + 2 * n:], dtype=np.int64), vals[0])
        elif op == OP_JOIN_WAITLIST:
            if k < 7:
                return 1
            n = vals[6]
            if n < 0 or k != 7 + n:
                return 1
            self.join_waitlist(vals[0], vals[1], vals[7:], vals[2], vals[3], vals[4], vals[5])
        else:
            call = _J_CALLS.get(op)
            if call is None or call[1] != k:
                return 1
            getattr(self, call[0])(*vals)
    except SlotEngineError as exc:
        raise CorruptJournal(f"journal record {seq} ({_J_NAMES.get(op, op)}) at offset {off} "
                             f"does not apply: {exc}", "", off) from exc
    return 0


cdef tuple j_replay(Core self, object buf, object pos, object end, object expect_seq,
                    object note):
    cdef Py_buffer view
    cdef int64_t p = _int(pos, "pos"), e = _int(end, "end"), t, plen
    cdef uint64_t expect, seq
    cdef uint32_t size, nlen
    cdef uint16_t op, flags
    cdef const char* base
    cdef const char* r
    cdef const char* pl
    cdef int status = 0, code
    cdef int32_t a, pt, sid, c, b
    cdef BookOut out
    if self._jst != J_OFF:
        raise InvalidState("replay needs the journal closed (replay never journals)")
    if isinstance(expect_seq, bool) or not isinstance(expect_seq, int) \
            or not 1 <= expect_seq < 2**64:
        raise InvalidArgument(f"expect_seq={expect_seq!r} must be an int in 1..2**64-1")
    expect = expect_seq
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if p < 0 or e < p or e > view.len:
            raise InvalidArgument(f"need 0 <= pos <= end <= {view.len}, not pos={p} end={e}")
        base = <const char*>view.buf
        while e - p >= 4:
            r = base + p
            size = se_ld32(r)
            if size == 0:
                break
            if not j_fits(r, p, e, False):
                status = 1
                break
            seq = se_ldu64(r + 8)
            if seq < expect:        # already applied (a snapshot covers it)
                p += size
                continue
            op = se_ld16(r + 16)
            flags = se_ld16(r + 18)
            nlen = se_ld32(r + 20)
            if seq != expect or flags > 1 or (nlen and not flags) \
                    or ((<uint64_t>nlen + 7) & ~(<uint64_t>7)) > size - J_HEAD:
                status = 1
                break
            plen = size - J_HEAD - ((nlen + 7) & ~7)
            pl = r + J_HEAD
            if op == OP_BOOK:
                if plen != 24:
                    status = 1
                    break
                t = se_ld64(pl)
                a = se_ldi32(pl + 8)
                pt = se_ldi32(pl + 12)
                sid = se_ldi32(pl + 16)
                c = se_ld16(pl + 20)
                if not (0 <= a < <int64_t>self._acct_hist.size()
                        and 0 <= pt < <int64_t>self._patients.size()
                        and 0 <= sid < <int64_t>self._sessions.size() and c < self._n_ch
                        and se_ld16(pl + 22) <= 1 and j_ok_time(self, t)):
                    j_bad_apply(p, seq, op, "an id or the time is out of range")
                if self._cover:
                    se_prefetch(&self._purses[pt])
                out.slot = -1
                out.booking = -1
                out.ticket = -1
                out.retry = 0
                self._book(a, pt, sid, c, t, se_ld16(pl + 22) != 0, &out)
            elif op == OP_CONFIRM or op == OP_CANCEL or op == OP_CHECK_IN:
                if plen != 16:
                    status = 1
                    break
                b = se_ldi32(pl)
                a = se_ldi32(pl + 4)
                t = se_ld64(pl + 8)
                if not (0 <= b < <int64_t>self._bookings.size() and j_ok_time(self, t)
                        and (op == OP_CHECK_IN or 0 <= a < <int64_t>self._acct_hist.size())):
                    j_bad_apply(p, seq, op, "an id or the time is out of range")
                if op == OP_CONFIRM:
                    self._confirm(b, a, t)
                elif op == OP_CANCEL:
                    self._cancel(b, a, t)
                else:
                    self._check_in(b, t)
            elif op == OP_ADVANCE:
                if plen != 8:
                    status = 1
                    break
                t = se_ld64(pl)
                if not j_ok_time(self, t):
                    j_bad_apply(p, seq, op, "the time is out of range")
                self._begin(t)
            elif op == OP_DRAIN:
                if plen != 0:
                    status = 1
                    break
                self._events.clear()
            elif op == OP_BOOK_MANY:
                if j_exec_many(self, pl, plen, p, seq):
                    status = 1
                    break
            elif OP_ADD_SESSION <= op <= OP_LAST:
                if j_exec_rare(self, op, pl, plen, p, seq):
                    status = 1
                    break
            else:
                status = 1
                break
            expect += 1
            p += size
            if flags and note is not None:
                note(PyBytes_FromStringAndSize(pl + plen, nlen))
    finally:
        PyBuffer_Release(&view)
    return (p, expect, status)
