"""A property test of a host application, built on ``slotengine.testing``.

``FrontDesk`` stands in for your own code: a booking front end that takes
patients' requests from a queue, sends them to an embedded ``se.Engine``,
confirms holds at once (payment is taken up front), follows queued
fair-release tickets until they are served, cancels on request, and keeps
its own record of who has which appointment (what it would show patients).

The property, over whole release rushes that hypothesis draws (policies,
sessions, bursts of requests, retries, families booked from one account,
cancellations):

* the front desk never reports an appointment the engine does not have
  (same booking id, patient, session and slot, and still live);
* no patient holds two live bookings in one session, in the desk's record
  or in the engine;
* the engine's own invariants hold after every step.

Run it either way (needs ``pip install hypothesis pytest``)::

    python -m pytest examples/property_test_example.py
    python examples/property_test_example.py

To see it catch a bug, delete the ``elif`` branch in ``FrontDesk._record``
(the first draft of this file had that bug): hypothesis finds a rush where a
queued request with ``hold=True`` is served as a hold at the cohort's close,
the hold expires before the desk next looks, and the desk still shows the
appointment; it shrinks it to one session, one slot and one request.
"""
from __future__ import annotations

from collections import deque

from hypothesis import given, settings

import slotengine as se
import slotengine.testing as sst


class FrontDesk:
    """A toy host: a request queue in front of an Engine, and its own appointment book."""

    def __init__(self, engine: se.Engine) -> None:
        self.engine = engine
        self.queue: deque[sst.Arrival] = deque()
        #: booking id -> (account, patient, session): what the desk tells patients
        self.appointments: dict[int, tuple[str, str, str]] = {}
        #: fair-release tickets not yet served -> (account, patient, session)
        self.waiting: dict[int, tuple[str, str, str]] = {}

    def submit(self, request: sst.Arrival) -> None:
        """A patient taps "book"; the request waits in the desk's queue."""
        self.queue.append(request)

    def work(self, now: int) -> None:
        """Send every queued request to the engine, then catch up with served tickets."""
        self.sync(now)
        while self.queue:
            q = self.queue.popleft()
            r = self.engine.book(q.account, q.patient, q.session, q.channel, now=now, hold=q.hold)
            if r.status in (se.Status.BOOKED, se.Status.HELD):
                self._record(r.booking, q.account, q.patient, q.session, now)
            elif r.status == se.Status.QUEUED:
                self.waiting[r.ticket] = (q.account, q.patient, q.session)

    def sync(self, now: int) -> None:
        """Move the engine clock to ``now`` and record tickets served by then."""
        self.engine.advance(now)
        for ticket, (account, patient, session) in list(self.waiting.items()):
            info = self.engine.ticket(ticket)
            if info.state == se.TicketState.QUEUED:
                continue
            del self.waiting[ticket]
            if info.booking is not None:
                self._record(info.booking, account, patient, session, now)

    def _record(self, booking: int, account: str, patient: str, session: str, now: int) -> None:
        """Confirm a hold (payment up front), then write the appointment down."""
        state = self.engine.booking(booking).state
        if state == se.BookingState.HELD:
            if not self.engine.confirm(booking, account=account, now=now).ok:
                return  # the hold expired first: nothing to show the patient
        elif state != se.BookingState.BOOKED:
            return  # a served ticket's hold expired before the desk looked
        self.appointments[booking] = (account, patient, session)

    def cancel(self, patient: str, session: str, now: int) -> bool:
        """The patient cancels their appointment in ``session``; True if it went."""
        self.sync(now)
        for booking, (account, p, s) in list(self.appointments.items()):
            if (p, s) != (patient, session):
                continue
            if self.engine.cancel(booking, account=account, now=now).status == se.Status.CANCELLED:
                del self.appointments[booking]
                return True
        return False


def check_desk(desk: FrontDesk) -> None:
    """The property: the desk's record agrees with the engine, and both are sane."""
    engine = desk.engine
    engine._check_invariants()
    for booking, (account, patient, session) in desk.appointments.items():
        info = engine.booking(booking)
        assert (info.account, info.patient, info.session) == (account, patient, session)
        assert info.state == se.BookingState.BOOKED, f"desk shows booking {booking} in {info.state!r}"
    shown = [(p, s) for _, p, s in desk.appointments.values()]
    assert len(shown) == len(set(shown)), "the desk shows a patient twice in one session"
    sst.check_rush(engine)  # the engine's side: no slot or patient twice


@settings(max_examples=40, deadline=None)
# This desk books and cancels only: no waitlist joins or 停诊 in its scenarios.
@given(sst.rush_scenarios(max_arrivals=30, waitlist=False, suspensions=False))
def test_front_desk_agrees_with_engine(scenario: sst.Scenario) -> None:
    desk = FrontDesk(sst.build_engine(scenario))
    for step in scenario.steps():
        if isinstance(step, sst.Arrival):
            desk.submit(step)
            desk.work(step.now)
        else:
            arrival = scenario.arrivals[step.arrival]
            desk.cancel(arrival.patient, arrival.session, step.now)
        check_desk(desk)
    desk.sync(scenario.end)
    check_desk(desk)


if __name__ == "__main__":
    test_front_desk_agrees_with_engine()
    print("property holds: the front desk agrees with the engine")
