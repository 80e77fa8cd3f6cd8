# Risk helpers (included by _core.pyx): time rings and the GCRA.
#
# A ring is a fixed-stride run of int64 times in a flat vector (one stride per
# account or patient), oldest first, with its fill count kept in the owner's
# record; pushing onto a full ring drops the oldest.  Strides are policy
# counts (early_count, cancel_flag_count), so a ring costs 8 bytes per entry
# and no allocation.


cdef inline void ring_push(int64_t* times, uint16_t* n, int32_t cap, int64_t t) noexcept nogil:
    """Append t, dropping the oldest entry when the ring is full.  O(cap)."""
    if n[0] == cap:
        if cap > 1:
            memmove(times, times + 1, (cap - 1) * sizeof(int64_t))
        times[cap - 1] = t
    else:
        times[n[0]] = t
        n[0] += 1


cdef inline int32_t ring_count_after(const int64_t* times, int32_t n, int64_t after) noexcept nogil:
    """Entries with time > after.  O(n)."""
    cdef int32_t k, out = 0
    for k in range(n):
        if times[k] > after:
            out += 1
    return out


cdef inline int64_t gcra_check(int64_t* tat, int64_t now, int64_t T, int64_t tau) noexcept nogil:
    """GCRA admission: 0 when admitted (tat advances), else the wait in ms (> 0)."""
    if now < tat[0] - tau:
        return tat[0] - tau - now
    tat[0] = (tat[0] if tat[0] > now else now) + T
    return 0
