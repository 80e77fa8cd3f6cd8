# Name indexes (included by _core.pyx): account, patient and session name ->
# dense id, for book_named and cancel_named.
#
# The Engine's names list (bind_names) is the truth and only ever grows, in
# place; an index follows it lazily (ni_sync, before a look-up).  It is a
# binding, not state: never saved, emptied by bind_names and restore, rebuilt
# from the list.
#
# Why not the Engine's dict: a look-up in a dict of a million names costs
# three dependent cache misses (its index, its entry, then the int it
# holds); here it costs, almost always, one: a 24-byte slot that holds the
# id and, when the name is short ASCII (most ids: phone numbers, 18-digit ID
# card numbers, short codes), the name itself.  A host passes names it has
# just decoded from a request: equal to the indexed name, never the same
# object, so a slot holding only a pointer to the name would cost a second
# miss to compare the text; and such a str has no cached hash, so a short
# name is hashed here from its bytes with a per-Core random seed (ni_probe),
# cheaper than Python's SipHash and not open to chosen collisions.  A longer
# or non-ASCII name keeps its str hash's high bits in the slot and is
# compared with the bound list's string (that second miss).  Open addressing
# with linear probing, at most half full, so a miss (an unknown name) ends
# at an empty slot after a probe or two.  The index holds no references: the
# bound list owns the names, and only grows.

cdef enum:
    NI_KEY = 19         # the longest name kept whole in its slot (ASCII)
    NI_LONG = 0xFF      # NameSlot.len of a longer or non-ASCII name


cdef struct NameSlot:
    # 24 bytes.
    int32_t id          # -1: empty
    uint8_t len         # 1..NI_KEY: key is the name; NI_LONG: key starts with the hash tag
    char key[NI_KEY]


cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    void* PyUnicode_DATA(object o)


cdef extern from *:
    """
    /* The high and low halves of a 64 x 64-bit product, folded: the mixing
       step of the index's hash of short names. */
    static inline uint64_t se_mum(uint64_t a, uint64_t b) {
        __uint128_t r = (__uint128_t)a * b;
        return (uint64_t)r ^ (uint64_t)(r >> 64);
    }
    """
    uint64_t se_mum(uint64_t a, uint64_t b) noexcept nogil


cdef inline Py_ssize_t ascii_len(object name, Py_ssize_t most) noexcept:
    """The length of a str that is compact ASCII of 1..most characters, else 0 (such a
    name can be kept, and compared, as plain bytes)."""
    cdef Py_ssize_t n
    if not PyUnicode_IS_COMPACT_ASCII(name):
        return 0
    n = PyUnicode_GET_LENGTH(name)
    return n if n <= most else 0


cdef struct NameProbe:
    # One look-up's key: a short name's bytes (zero-padded) and length, or
    # n = 0 for a long one; h, the hash the slot index comes from.
    uint64_t h
    Py_ssize_t n
    char buf[24]


cdef inline int ni_probe(const uint64_t* seed, object name, NameProbe* pr) except -1:
    """Fill pr for ``name`` (an exact str).  A short name is hashed here from its
    bytes with the Core's random seed, which is cheaper than the str's own hash for
    the fresh objects hosts pass (never hashed before); a long one by its str hash."""
    cdef Py_ssize_t n = ascii_len(name, NI_KEY)
    cdef uint64_t w[3]
    pr.n = n
    if n == 0:
        pr.h = <uint64_t>hash(name)
        return 0
    memset(pr.buf, 0, 24)
    memcpy(pr.buf, PyUnicode_DATA(name), n)
    memcpy(w, pr.buf, 24)
    pr.h = se_mum(w[0] ^ seed[0], w[1] ^ seed[1]) ^ se_mum(w[2] ^ seed[2], <uint64_t>n ^ seed[3])
    return 0


cdef inline uint32_t ni_tag(uint64_t h) noexcept nogil:
    return <uint32_t>(h >> 32)


cdef inline void ni_touch(const vector[NameSlot]& t, const NameProbe* pr) noexcept nogil:
    """Prefetch the slot a look-up of pr starts at."""
    if t.size():
        se_prefetch(&t[<size_t>pr.h & (t.size() - 1)])


cdef inline int32_t ni_find(const vector[NameSlot]& t, list names, object name,
                            const NameProbe* pr) except -2:
    """The id of ``name`` (an exact str, probe pr) in index t of ``names``, or -1."""
    cdef size_t mask, i
    cdef uint32_t tag, stag
    cdef const NameSlot* sl
    if t.size() == 0:
        return -1
    mask = t.size() - 1
    i = <size_t>pr.h & mask
    if pr.n:
        while True:
            sl = &t[i]
            if sl.id < 0:
                return -1
            if sl.len == pr.n and memcmp(sl.key, pr.buf, NI_KEY) == 0:  # zero-padded
                return sl.id
            i = (i + 1) & mask
    tag = ni_tag(pr.h)
    while True:
        sl = &t[i]
        if sl.id < 0:
            return -1
        if sl.len == NI_LONG:
            memcpy(&stag, sl.key, sizeof(uint32_t))
            if stag == tag and sl.id < PyList_GET_SIZE(names):
                if (<object>PyList_GET_ITEM(names, sl.id)) == name:
                    return sl.id
        i = (i + 1) & mask


cdef inline void ni_put(vector[NameSlot]& t, const NameProbe* pr, int32_t id) noexcept nogil:
    """Insert a name known to be absent (its probe pr) into an empty, zeroed slot."""
    cdef size_t mask = t.size() - 1
    cdef size_t i = <size_t>pr.h & mask
    cdef uint32_t tag
    cdef NameSlot* sl
    while t[i].id >= 0:
        i = (i + 1) & mask
    sl = &t[i]
    sl.id = id
    if pr.n:
        sl.len = <uint8_t>pr.n
        memcpy(sl.key, pr.buf, NI_KEY)
    else:
        sl.len = NI_LONG
        tag = ni_tag(pr.h)
        memcpy(sl.key, &tag, sizeof(uint32_t))


cdef int ni_sync(vector[NameSlot]& t, const uint64_t* seed, list names, Py_ssize_t limit,
                 Py_ssize_t* done) except -1:
    """Index names[done:limit] (the list only grows; limit: the ids the core has room
    for): ids are list positions.  O(new names), O(all names) when the table doubles."""
    cdef Py_ssize_t n = min(PyList_GET_SIZE(names), limit), k
    cdef size_t cap = t.size() if t.size() else 64
    cdef vector[NameSlot] grown
    cdef NameSlot empty
    cdef NameProbe pr
    if done[0] >= n:
        return 0
    while cap < <size_t>(2 * n):
        cap *= 2
    memset(&empty, 0, sizeof(NameSlot))
    empty.id = -1
    if cap != t.size():
        grown.assign(cap, empty)       # may raise MemoryError: t is unchanged then
        for k in range(done[0]):       # the indexed names, again, by their ids
            ni_probe(seed, <object>PyList_GET_ITEM(names, k), &pr)
            ni_put(grown, &pr, <int32_t>k)
        t.swap(grown)
    for k in range(done[0], n):
        ni_probe(seed, <object>PyList_GET_ITEM(names, k), &pr)
        ni_put(t, &pr, <int32_t>k)
        done[0] = k + 1
    return 0


cdef inline int32_t _dict_id(dict ids, object name) except -2:
    """The id a dict of names gives ``name``, or -1 (TypeError for an unhashable one)."""
    cdef object x = ids.get(name)
    return -1 if x is None else <int32_t>x


cdef inline int32_t ni_lookup(vector[NameSlot]& t, const uint64_t* seed, list names,
                              Py_ssize_t limit, Py_ssize_t* done, str name) except -2:
    """The id of ``name`` in index t of ``names``, indexing the names added since the
    last look-up first (ni_sync), or -1."""
    cdef NameProbe pr
    if done[0] < PyList_GET_SIZE(names):
        ni_sync(t, seed, names, limit, done)
    ni_probe(seed, name, &pr)
    return ni_find(t, names, name, &pr)


cdef void ni_clear(vector[NameSlot]& t, Py_ssize_t* done) noexcept:
    """Empty the index."""
    t.clear()
    t.shrink_to_fit()
    done[0] = 0


# -- inline account keys (Account.key) ------------------------------------------------
#
# cancel_named must check that the caller names the booking's owner.  The
# booking says which account that is; comparing the caller's string with the
# name kept in the owner's row (which the cancel reads anyway, for its cancel
# signal) costs no cache miss, where a look-up in the index costs one, and a
# second when the caller's string is equal to the indexed one but a
# different object (what a host that decodes requests passes).

cdef inline void nk_put(Account* ac, object name) noexcept:
    """Keep ``name`` in the account's row if it fits (else no key)."""
    cdef Py_ssize_t n = ascii_len(name, NAME_KEY) if type(name) is str else 0
    if n:
        memcpy(ac.key, PyUnicode_DATA(name), n)
    ac.key_len = <uint8_t>n


cdef inline bint nk_is(const Account* ac, str name) noexcept:
    """Whether the row's key is exactly ``name`` (False when the row has no key)."""
    return (ac.key_len != 0 and ascii_len(name, NAME_KEY) == ac.key_len
            and memcmp(ac.key, PyUnicode_DATA(name), ac.key_len) == 0)
