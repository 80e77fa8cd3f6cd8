# Known (patient, hospital) pairs (included by _core.pyx): an insert-only
# open-addressing hash set of uint64 keys.  A slot stores key + 1 (0 = empty);
# the table is a power of two, at most half full, probed linearly from a
# Fibonacci hash, so a lookup is usually one cache line: std::unordered_set
# costs a division and two or three dependent cache misses instead.

cdef uint64_t KNOWN_MUL = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t known_key(int32_t patient, int32_t hospital) noexcept nogil:
    return ((<uint64_t>patient) << 32) | <uint64_t>hospital


cdef inline bint known_has(const vector[uint64_t]& t, int shift, uint64_t key) noexcept nogil:
    """Whether key is in the table.  O(1) expected."""
    cdef uint64_t v = key + 1, x
    cdef size_t mask, i
    if t.size() == 0:
        return False
    mask = t.size() - 1
    i = <size_t>((v * KNOWN_MUL) >> shift)
    while True:
        x = t[i]
        if x == v:
            return True
        if x == 0:
            return False
        i = (i + 1) & mask


cdef inline bint known_put(vector[uint64_t]& t, int shift, uint64_t key) noexcept nogil:
    """Insert key (the table must have a free slot); True if it was new."""
    cdef uint64_t v = key + 1, x
    cdef size_t mask = t.size() - 1
    cdef size_t i = <size_t>((v * KNOWN_MUL) >> shift)
    while True:
        x = t[i]
        if x == v:
            return False
        if x == 0:
            t[i] = v
            return True
        i = (i + 1) & mask
