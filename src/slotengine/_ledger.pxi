# Free-slot bitmap of one session (included by _core.pyx).
#
# A session's region of Core._bits holds n_words = ceil(capacity / 64) words,
# bit i set <=> slot i is FREE.  Sessions of more than 64 slots add
# ceil(n_words / 64) summary words after them, bit k set <=> word k is
# non-zero.  The lowest FREE slot is then two count-trailing-zeros away after
# skipping empty summary words (at most 16 for capacity 65535), so booking
# never scans a session's slots; a typical session of <= 64 slots costs one
# word and one ctz.

cdef inline int32_t bm_words(int32_t capacity) noexcept nogil:
    return (capacity + 63) >> 6


cdef inline int64_t bm_size(int32_t n_words) noexcept nogil:
    """Words a region needs: the bitmap plus its summary (none for one word)."""
    return n_words + (((n_words + 63) >> 6) if n_words > 1 else 0)


cdef inline void bm_set(uint64_t* w, int32_t n_words, int32_t i) noexcept nogil:
    cdef int32_t k = i >> 6
    w[k] |= (<uint64_t>1) << (i & 63)
    if n_words > 1:
        w[n_words + (k >> 6)] |= (<uint64_t>1) << (k & 63)


cdef inline void bm_clear(uint64_t* w, int32_t n_words, int32_t i) noexcept nogil:
    cdef int32_t k = i >> 6
    w[k] &= ~((<uint64_t>1) << (i & 63))
    if n_words > 1 and w[k] == 0:
        w[n_words + (k >> 6)] &= ~((<uint64_t>1) << (k & 63))


cdef inline int32_t bm_lowest(const uint64_t* w, int32_t n_words) noexcept nogil:
    """Index of the lowest set bit, or -1.  O(1 + capacity / 4096)."""
    cdef int32_t j, k
    cdef int32_t n_sum
    if n_words == 1:
        return se_ctz64(w[0]) if w[0] else -1
    n_sum = (n_words + 63) >> 6
    for j in range(n_sum):
        if w[n_words + j]:
            k = (j << 6) + se_ctz64(w[n_words + j])
            return (k << 6) + se_ctz64(w[k])
    return -1
