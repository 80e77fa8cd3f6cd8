# Result of one command (included by _core.pyx).

# Lookup tables from code to enum member, built once at import (index = code).
cdef tuple _STATUS = tuple(
    Status(i) if i in Status._value2member_map_ else None
    for i in range(max(Status) + 1))
cdef tuple _REASON = tuple(
    Reason(i) if i in Reason._value2member_map_ else None
    for i in range(max(Reason) + 1))


@cython.final
@cython.freelist(64)
@cython.auto_pickle(False)
cdef class Result:
    """The outcome of one command: a status, a reason, and the booking acted on.

    Plain C fields; the enum members and tuples are built only when read, so
    creating a Result costs one allocation from a free list.

    >>> r = core.book(0, 0, 0, 0, now, False)     # doctest: +SKIP
    >>> r.status, r.reason, r.slot, r.window       # doctest: +SKIP
    (<Status.BOOKED: 1>, <Reason.NONE: 0>, 1, (100, 110))
    """

    cdef int16_t _status
    cdef int16_t _reason
    cdef int32_t _slot       # 1-based, 0 when none
    cdef int32_t _session    # -1 when none
    cdef int64_t _booking    # -1 when none
    cdef int64_t _start      # window start (valid when _slot != 0)
    cdef int64_t _slot_ms
    cdef int64_t _ticket     # -1 when none
    cdef int64_t _retry      # retry_after ms, 0 when none
    cdef int64_t _request    # waitlist request id, -1 when none

    @property
    def status(self):
        """What the command did (``Status``)."""
        return _STATUS[self._status]

    @property
    def reason(self):
        """Why it did not do what was asked (``Reason.NONE`` when it did)."""
        return _REASON[self._reason]

    @property
    def slot(self):
        """The 1-based slot number, or None."""
        return self._slot if self._slot else None

    @property
    def booking(self):
        """The booking id, or None."""
        return self._booking if self._booking >= 0 else None

    @property
    def session(self):
        """The session id, or None."""
        return self._session if self._session >= 0 else None

    @property
    def window(self):
        """The slot's suggested arrival window ``(start_ms, end_ms)``, or None."""
        if not self._slot:
            return None
        return (self._start, self._start + self._slot_ms)

    @property
    def ticket(self):
        """The ticket id of a queued request (or of cancel_ticket), else None."""
        return self._ticket if self._ticket >= 0 else None

    @property
    def request(self):
        """The waitlist request id (join_waitlist, cancel_waitlist), else None."""
        return self._request if self._request >= 0 else None

    @property
    def retry_after(self):
        """Milliseconds until a THROTTLED account is admitted again (0 otherwise)."""
        return self._retry

    @property
    def ok(self):
        """True when the command did what was asked."""
        return (self._status == ST_BOOKED or self._status == ST_HELD
                or self._status == ST_CANCELLED or self._status == ST_ARRIVED)

    def as_tuple(self):
        """``(status, reason, slot or 0, booking or -1)`` as plain ints."""
        return (<int>self._status, <int>self._reason, <int>self._slot, self._booking)

    def __eq__(self, other):
        if isinstance(other, Result):
            return self.as_tuple() == (<Result>other).as_tuple()
        if hasattr(other, "as_tuple"):
            return self.as_tuple() == other.as_tuple()
        return NotImplemented

    def __hash__(self):
        return hash(self.as_tuple())

    def __repr__(self):
        parts = [f"status={self.status.name}"]
        if self._reason != R_NONE:
            parts.append(f"reason={self.reason.name}")
        for name in ("session", "slot", "booking", "window", "ticket", "request"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        if self._retry:
            parts.append(f"retry_after={self._retry}")
        return f"Result({', '.join(parts)})"


cdef inline Result _result(int code, int32_t session, int32_t slot0, int64_t booking,
                           const Session* s):
    """A Result from a packed code (status | reason << 8) and a 0-based slot (-1 none)."""
    cdef Result r = Result.__new__(Result)
    r._status = code & 0xFF
    r._reason = code >> 8
    r._session = session
    r._booking = booking
    r._ticket = -1
    r._retry = 0
    r._request = -1
    if slot0 >= 0:
        r._slot = slot0 + 1
        r._start = s.starts_at + slot0 * s.slot_ms
        r._slot_ms = s.slot_ms
    else:
        r._slot = 0
    return r
