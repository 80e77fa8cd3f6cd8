# Name indexes (included by _core.pyx): account and patient name -> dense id,
# for book_named and cancel_named.
#
# The Engine's names list (bind_names) is the truth and only ever grows, in
# place; an index follows it lazily (ni_sync, before a look-up) and holds a
# reference to every name it indexes.  It is a binding, not state: never
# saved, emptied by bind_names and restore, rebuilt from the list.
#
# Why not the Engine's dict: a look-up in a dict of a million names costs
# three dependent cache misses (its index, its entry, then the int it
# holds); here a look-up reads the name's cached hash (the caller's object,
# usually in cache) and, almost always, one 16-byte slot that holds the id
# itself.  Open addressing with linear probing, at most half full, so a miss
# (an unknown name) ends at an empty slot after a probe or two.

cdef struct NameSlot:
    # 16 bytes, four a cache line.
    PyObject* name      # NULL: empty (an owned reference otherwise)
    int32_t id
    uint32_t tag        # the hash's high 32 bits: most non-matching slots skip the compare


cdef inline uint32_t ni_tag(Py_hash_t h) noexcept nogil:
    return <uint32_t>((<uint64_t>h) >> 32)


cdef inline int32_t ni_find(const vector[NameSlot]& t, str name) except -2:
    """The id of ``name`` (an exact str) in index t, or -1."""
    cdef Py_hash_t h
    cdef size_t mask, i
    cdef uint32_t tag
    cdef const NameSlot* sl
    if t.size() == 0:
        return -1
    h = hash(name)                     # cached in the str object after its first use
    mask = t.size() - 1
    i = <size_t>h & mask
    tag = ni_tag(h)
    while True:
        sl = &t[i]
        if sl.name == NULL:
            return -1
        if sl.name == <PyObject*>name:
            return sl.id
        if sl.tag == tag and (<str>sl.name) == name:
            return sl.id
        i = (i + 1) & mask


cdef inline void ni_put(vector[NameSlot]& t, PyObject* name, Py_hash_t h, int32_t id) noexcept:
    """Insert a name known to be absent (a reference already taken for it)."""
    cdef size_t mask = t.size() - 1
    cdef size_t i = <size_t>h & mask
    while t[i].name != NULL:
        i = (i + 1) & mask
    t[i].name = name
    t[i].id = id
    t[i].tag = ni_tag(h)


cdef int ni_sync(vector[NameSlot]& t, list names, Py_ssize_t limit,
                 Py_ssize_t* done) except -1:
    """Index names[done:limit] (the list only grows; limit: the ids the core has room
    for): ids are list positions.  O(new names), O(all names) when the table doubles."""
    cdef Py_ssize_t n = min(PyList_GET_SIZE(names), limit), k
    cdef size_t cap = t.size() if t.size() else 64
    cdef vector[NameSlot] grown
    cdef NameSlot empty
    cdef PyObject* name
    cdef Py_hash_t h
    if done[0] >= n:
        return 0
    while cap < <size_t>(2 * n):
        cap *= 2
    empty.name = NULL
    empty.id = -1
    empty.tag = 0
    if cap != t.size():
        grown.assign(cap, empty)       # may raise MemoryError: t is unchanged then
        for k in range(<Py_ssize_t>t.size()):
            if t[k].name != NULL:
                ni_put(grown, t[k].name, hash(<object>t[k].name), t[k].id)
        t.swap(grown)
    for k in range(done[0], n):
        name = PyList_GET_ITEM(names, k)
        h = hash(<object>name)
        Py_INCREF(<object>name)
        ni_put(t, name, h, <int32_t>k)
        done[0] = k + 1
    return 0


cdef inline int32_t ni_lookup(vector[NameSlot]& t, list names, Py_ssize_t limit,
                              Py_ssize_t* done, str name) except -2:
    """The id of ``name`` in index t of ``names``, indexing the names added since the
    last look-up first (ni_sync), or -1."""
    if done[0] < PyList_GET_SIZE(names):
        ni_sync(t, names, limit, done)
    return ni_find(t, name)


cdef void ni_clear(vector[NameSlot]& t, Py_ssize_t* done) noexcept:
    """Drop every reference the index holds and empty it."""
    cdef size_t k
    for k in range(t.size()):
        if t[k].name != NULL:
            Py_DECREF(<object>t[k].name)
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

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    void* PyUnicode_DATA(object o)


cdef inline void nk_put(Account* ac, object name) noexcept:
    """Keep ``name`` in the account's row if it fits (else no key)."""
    cdef Py_ssize_t n
    ac.key_len = 0
    if type(name) is str and PyUnicode_IS_COMPACT_ASCII(name):
        n = PyUnicode_GET_LENGTH(name)
        if 0 < n <= NAME_KEY:
            memcpy(ac.key, PyUnicode_DATA(name), n)
            ac.key_len = <uint8_t>n


cdef inline bint nk_is(const Account* ac, str name) noexcept:
    """Whether the row's key is exactly ``name`` (False when the row has no key)."""
    return (ac.key_len != 0 and PyUnicode_GET_LENGTH(name) == ac.key_len
            and PyUnicode_IS_COMPACT_ASCII(name)
            and memcmp(ac.key, PyUnicode_DATA(name), ac.key_len) == 0)
