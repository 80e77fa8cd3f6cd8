# Timer heap (included by _core.pyx): a binary min-heap of Timer structs keyed
# on (due, seq).  seq is unique, so the order is total and both engines pop
# timers in exactly the same order.

cdef inline bint timer_before(const Timer& a, const Timer& b) noexcept nogil:
    return a.due < b.due or (a.due == b.due and a.seq < b.seq)


cdef void heap_push(vector[Timer]& h, Timer t) noexcept nogil:
    """Sift up.  O(log n)."""
    cdef size_t i, parent
    h.push_back(t)
    i = h.size() - 1
    while i > 0:
        parent = (i - 1) >> 1
        if not timer_before(t, h[parent]):
            break
        h[i] = h[parent]
        i = parent
    h[i] = t


cdef Timer heap_pop(vector[Timer]& h) noexcept nogil:
    """Remove and return the smallest timer (the heap must not be empty).  O(log n)."""
    cdef Timer top = h[0]
    cdef Timer last = h.back()
    cdef size_t i = 0, child, n
    h.pop_back()
    n = h.size()
    if n == 0:
        return top
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and timer_before(h[child + 1], h[child]):
            child += 1
        if not timer_before(h[child], last):
            break
        h[i] = h[child]
        i = child
    h[i] = last
    return top
