# Fair-release helpers (included by _core.pyx): the engine generator, the
# cohort lottery, and the prefetch of a cohort list's end.  Cohort lists are
# arrays (Core._fair / Core._slow); the drain queue is singly linked through
# Ticket.next (see Core._cohort_close / Core._drain).


cdef inline void lane_tail(vector[int32_t]* xs) noexcept nogil:
    """Prefetch where the next ticket of a cohort list goes (an empty list has no line)."""
    if xs.size() < xs.capacity():
        se_prefetch(xs.data() + xs.size())


cdef inline uint64_t rng_step(uint64_t* state) noexcept nogil:
    """splitmix64: advance the state and return the next output."""
    cdef uint64_t z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline void fisher_yates(int32_t* xs, int64_t n, uint64_t* state) noexcept nogil:
    """Shuffle in place: for i from n-1 down to 1, j = rng % (i+1), swap(i, j)."""
    cdef int64_t i, j
    cdef int32_t tmp
    i = n - 1
    while i >= 1:
        j = <int64_t>(rng_step(state) % <uint64_t>(i + 1))
        tmp = xs[i]
        xs[i] = xs[j]
        xs[j] = tmp
        i -= 1
