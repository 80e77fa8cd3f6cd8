"""Thread-safe and asyncio facades over one single-writer Engine (issue 6).

The Engine itself stays single-writer.  These facades serialize callers:

* ``LockedEngine(engine)``: the Engine's public API (methods, properties,
  ``credit``), every call made under one ``threading.RLock``.
* ``AsyncEngine(engine)``: the same API with ``async`` methods, all run on one
  dedicated writer thread, so an event loop never waits for the engine or
  for a disk sync.

Guarantees (both facades):

* **Linearizable.**  Each call takes effect at one instant between its
  invocation and its return, with the lock held.  The order is the order in
  which callers acquire the lock (LockedEngine), or in which commands are
  submitted, i.e. their coroutines start (AsyncEngine).
* **Same results.**  Results and raised errors are exactly those of calling
  the wrapped Engine directly, one call at a time, in that order; a call
  that raises leaves the engine unchanged (as the Engine promises).
* **Durable on return** means what the engine's journal mode says
  (docs/durability.md): ``process``: the command's record is in the shared
  mapping (survives a killed process); ``grouped``: it will be msynced
  within ``group_ms`` / ``group_records``; ``fsync``: it *has been* msynced
  when the call returns: the facade sets ``journal.defer_sync`` and calls
  ``journal.commit()`` after the lock is released, so callers finishing at
  the same time share one msync (group commit); ``off`` / in memory:
  nothing until ``close()``.

Once an fsync engine is wrapped, call it only through its facade: a direct
``engine.book(...)`` would not be synced before it returns.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import weakref
from functools import update_wrapper
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from .credit import Credit
from .engine import Engine
from .errors import InvalidState, InvalidType

__all__ = ["LockedEngine", "AsyncEngine", "EngineClosed"]

# Engine methods that change nothing, so need no journal commit (properties
# never do).  Anything else commits; a commit with nothing new to sync is cheap.
# ``close`` flushes the journal itself and leaves nothing to commit.
ENGINE_NO_COMMIT = frozenset({
    "session_counts", "session", "booking", "live_bookings", "patient_banned_until",
    "explain", "risk", "flag_log", "ticket", "position", "waitlist", "session_waitlist",
    "session_ids", "channel_ids", "sessions", "dump", "state_hash", "_check_invariants",
    "memory_usage", "reserve", "close",
})
CREDIT_NO_COMMIT = frozenset({
    "check", "available", "line", "statement", "bill", "bills", "movements", "totals",
})
# Private names wrapped as well (tests use them).
_EXTRA = frozenset({"_check_invariants"})
# The facades' own instance attributes: never generated over.
_RESERVED = frozenset({"engine", "lock", "locked", "credit", "policy", "seed", "backend"})
# AsyncEngine: at most this many queued commands share one journal commit.
_MAX_BATCH = 256


class _GroupJournal(Protocol):
    """What the facades need of ``engine._journal`` (slotengine.journal.Journal)."""

    durability: str
    defer_sync: bool

    def commit(self) -> object:
        """Make every record written so far durable; cheap when nothing is new.

        Must be safe to call from several threads at once: a caller whose
        record another thread's sync already covered returns at once.
        """


class EngineClosed(InvalidState):
    """The AsyncEngine was closed: its writer thread runs no more commands."""


def _group_journal(engine: object) -> _GroupJournal | None:
    """The engine's journal if it syncs every command ("fsync"), after switching that to commits."""
    journal = getattr(engine, "_journal", None)
    if journal is None or getattr(journal, "durability", None) != "fsync":
        return None
    journal.defer_sync = True
    return journal  # type: ignore[no-any-return]


def _api(cls: type, own: Iterable[str]) -> dict[str, bool]:
    """Public methods and properties of ``cls`` (name -> is a property), minus ``own``.

    Class- and static methods are left out (they act on no instance), and so
    are private names except ``_EXTRA``.
    """
    skip = set(own) | _RESERVED
    out: dict[str, bool] = {}
    for klass in reversed(cls.__mro__[:-1]):  # base classes first, ``object`` out
        for name, value in vars(klass).items():
            if (name.startswith("_") and name not in _EXTRA) or name in skip:
                continue
            if isinstance(value, property):
                out[name] = True
            elif callable(value) and not isinstance(value, (staticmethod, classmethod)):
                out[name] = False
    return out


# -- LockedEngine ----------------------------------------------------------------

if TYPE_CHECKING:
    # mypy sees the wrapped class's exact signatures; at run time the methods
    # below are generated and the facades derive from object only.
    _EngineAPI = Engine
    _CreditAPI = Credit
else:
    _EngineAPI = _CreditAPI = object


class _Locked:
    """Shared state of a locked view: what to call, the lock, the journal to commit."""

    _target: Any
    lock: threading.RLock
    _group: _GroupJournal | None


class _LockedMethod:
    """A generated LockedEngine / LockedCredit method.

    On a class it stands for the wrapped method (``__doc__``, ``__wrapped__``
    for ``inspect.signature``).  On first use per instance it binds a closure
    over the target's bound method and the lock and stores it on the instance,
    so later calls skip every look-up (the lock is most of what remains).
    """

    def __init__(self, facade: type, name: str, original: Callable[..., Any],
                 commits: bool) -> None:
        self.__doc__ = original.__doc__
        self.__wrapped__ = original
        self.__name__ = name
        self.__qualname__ = f"{facade.__qualname__}.{name}"
        self._name = name
        self._commits = commits

    def __get__(self, obj: _Locked | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        call = self._bind(obj)
        obj.__dict__[self._name] = call
        return call

    def __call__(self, obj: _Locked, /, *args: Any, **kwargs: Any) -> Any:
        """``LockedEngine.book(locked, ...)``: the same as ``locked.book(...)``."""
        return self.__get__(obj)(*args, **kwargs)

    def _bind(self, obj: _Locked) -> Callable[..., Any]:
        fn = getattr(obj._target, self._name)
        acquire, release = obj.lock.acquire, obj.lock.release
        group = obj._group if self._commits else None
        if group is None:
            def call(*args: Any, **kwargs: Any) -> Any:
                acquire()
                try:
                    return fn(*args, **kwargs)
                finally:
                    release()
        else:
            commit = group.commit

            def call(*args: Any, **kwargs: Any) -> Any:
                acquire()
                try:
                    result = fn(*args, **kwargs)
                finally:
                    release()
                # Outside the lock: other callers run meanwhile and share the
                # sync.  (Inside a host's ``with locked.lock:`` it is still
                # held: the commit then runs under it, still before we return.)
                commit()
                return result
        call.__name__ = call.__qualname__ = self._name
        call.__doc__ = self.__doc__
        call.__wrapped__ = self.__wrapped__.__get__(obj._target)  # type: ignore[attr-defined]
        return call


def _locked_property(name: str, original: property) -> property:
    def read(self: _Locked) -> Any:
        with self.lock:
            return getattr(self._target, name)
    return property(update_wrapper(read, original.fget) if original.fget else read,
                    doc=original.__doc__)


def _install_locked(facade: type, cls: type, no_commit: frozenset[str]) -> None:
    for name, is_property in _api(cls, vars(facade)).items():
        original = getattr(cls, name)
        setattr(facade, name, _locked_property(name, original) if is_property
                else _LockedMethod(facade, name, original, name not in no_commit))


class LockedCredit(_Locked, _CreditAPI):
    """``engine.credit`` behind its LockedEngine's lock (and journal commits)."""

    def __init__(self, credit: Credit, lock: threading.RLock, group: _GroupJournal | None) -> None:
        self._target = credit
        self.lock = lock
        self._group = group

    def __repr__(self) -> str:
        return f"<LockedCredit of {self._target!r}>"


class LockedEngine(_Locked, _EngineAPI):
    """An Engine any number of threads may call at once: each call runs under ``lock``.

    Every public Engine method and property is here with the same signature
    and result, generated from the class; ``credit`` is a locked view of
    ``engine.credit``, and ``policy``, ``seed``, ``backend`` are the engine's
    (they never change).  ``engine`` is the wrapped Engine.  The lock is an
    ``RLock``: ``with locked.lock:`` runs several calls as one atomic step
    (nobody else's call runs in between).

    An fsync-mode engine's journal is switched to group commit: a command's
    record is written under the lock, and the call then waits, *without* the
    lock, for ``journal.commit()``; callers finishing together share one
    msync, and each call still returns only once its record is on disk.
    ``with locked:`` closes the engine like ``with engine:``.

    Each engine method is looked up once per facade, on its first use.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._target = engine
        self.lock = threading.RLock()
        self._group = _group_journal(engine)
        self.credit = LockedCredit(engine.credit, self.lock, self._group)
        self.policy = engine.policy
        self.seed = engine.seed
        self.backend = engine.backend

    @classmethod
    def open(cls, *args: Any, **kwargs: Any) -> LockedEngine:
        """``LockedEngine(Engine.open(...))``: a durable engine behind the lock."""
        return cls(Engine.open(*args, **kwargs))

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(engine, *args, **kwargs)`` as one atomic step, durable on return like a command.

        For host code that works on the Engine itself (e.g.
        ``locked.call(fhir.import_bundle, bundle, now=t)``): nobody else's
        call runs in between, and an fsync engine's records are synced
        (group commit) before this returns, whatever ``fn`` did.
        """
        if not callable(fn):
            raise InvalidType(f"fn must be callable, not {type(fn).__name__}")
        with self.lock:
            result = fn(self.engine, *args, **kwargs)
        if self._group is not None:
            self._group.commit()
        return result

    def __enter__(self) -> LockedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.engine.__exit__(*exc)

    def __repr__(self) -> str:
        return f"<LockedEngine of {self.engine!r}>"


_install_locked(LockedEngine, Engine, ENGINE_NO_COMMIT)
_install_locked(LockedCredit, Credit, CREDIT_NO_COMMIT)


# -- AsyncEngine -----------------------------------------------------------------

# (future, target, name, args or None for an attribute read, kwargs, commits)
_Item = tuple["asyncio.Future[Any]", Any, str, "tuple | None", dict, bool]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """On the future's loop: hand over a result (nothing if its caller gave up)."""
    if not fut.done():
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in outcomes:
        _settle(fut, ok, value)


def _deliver(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """Hand results back from the writer thread: one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, some in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, some)
        except RuntimeError:
            pass  # that event loop is closed: nobody is waiting any more


class _Writer:
    """The one thread that runs an AsyncEngine's commands, in submission order.

    It takes every command already queued (up to ``_MAX_BATCH``), runs each
    under the lock, then, if the engine syncs every command (fsync) and any
    of them may have changed state, calls ``journal.commit()`` once for all
    of them, and only then hands their results back (one wake-up of each
    waiting event loop per batch).
    """

    def __init__(self, lock: threading.RLock, group: _GroupJournal | None) -> None:
        self.lock = lock
        self.group = group
        self.closed = False
        self.stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._gate = threading.Lock()  # "not closed" and the put are one step
        self.thread = threading.Thread(target=self._run, name="slotengine-writer", daemon=True)
        self.thread.start()

    def submit(self, target: Any, name: str, args: tuple | None, kwargs: dict,
               commits: bool) -> asyncio.Future[Any]:
        """Queue one command now; the future gets its result (or its error)."""
        fut = asyncio.get_running_loop().create_future()
        with self._gate:
            if self.closed:
                raise EngineClosed(f"this AsyncEngine is closed: cannot run {name}()")
            self._queue.put((fut, target, name, args, kwargs, commits))
        return fut

    def stop(self) -> None:
        """Let the queued commands run, then end the thread.  Idempotent."""
        with self._gate:
            if not self.closed:
                self.closed = True
                self._queue.put(None)

    def _run(self) -> None:
        try:
            while self._run_batch():
                pass
        finally:
            with self._gate:
                self.closed = True
            stopped = EngineClosed("the AsyncEngine's writer thread stopped")
            while True:  # only if the loop itself failed: nobody waits forever
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    _deliver([(item[0], False, stopped)])
            self.stopped.set_result(None)

    def _run_batch(self) -> bool:
        """Run what is queued (waiting for at least one); False once told to stop."""
        batch = [self._queue.get()]
        while len(batch) < _MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        group = self.group
        done: list[tuple[asyncio.Future[Any], bool, Any, bool]] = []
        dirty = False
        going = True
        for item in batch:
            if item is None:  # the last item ever queued
                going = False
                break
            fut, target, name, args, kwargs, commits = item
            try:
                with self.lock:
                    value = (getattr(target, name) if args is None
                             else getattr(target, name)(*args, **kwargs))
                ok = True
            except BaseException as exc:  # the caller gets it; the writer goes on
                value, ok = exc, False
            done.append((fut, ok, value, commits))
            dirty = dirty or (ok and commits)
        if dirty and group is not None:
            try:
                group.commit()
            except BaseException as exc:
                # Not durable, so not acknowledged: each command that may
                # have written a record raises the sync's error instead.
                done = [(f, False, exc, c) if ok and c else (f, ok, v, c)
                        for f, ok, v, c in done]
        _deliver([(fut, ok, value) for fut, ok, value, _ in done])
        return going


class _Async:
    """Shared state of an async view: what to call and the writer thread."""

    _target: Any
    _writer: _Writer


def _async_method(name: str, original: Callable[..., Any], commits: bool) -> Callable[..., Any]:
    async def method(self: _Async, /, *args: Any, **kwargs: Any) -> Any:
        return await self._writer.submit(self._target, name, args, kwargs, commits)
    return update_wrapper(method, original)


def _async_property(name: str, original: property) -> property:
    def read(self: _Async) -> asyncio.Future[Any]:
        return self._writer.submit(self._target, name, None, {}, False)
    return property(read, doc=f"Awaitable: {original.__doc__ or name}")


def _install_async(facade: type, cls: type, no_commit: frozenset[str]) -> None:
    for name, is_property in _api(cls, vars(facade)).items():
        original = getattr(cls, name)
        setattr(facade, name, _async_property(name, original) if is_property
                else _async_method(name, original, name not in no_commit))


class AsyncCredit(_Async):
    """``engine.credit`` with async methods, run on its AsyncEngine's writer thread."""

    def __init__(self, owner: AsyncEngine) -> None:
        self._owner = owner  # keeps the AsyncEngine (and so its thread) alive
        self._target = owner.engine.credit
        self._writer = owner._writer

    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any: ...

    def __repr__(self) -> str:
        return f"<AsyncCredit of {self._target!r}>"


class AsyncEngine(_Async):
    """An Engine for asyncio: every public method is ``async`` and runs on one writer thread.

    ``await aengine.book(...)`` queues the command and returns its result;
    commands run one at a time, in the order they were submitted (a call is
    submitted when its coroutine starts), on a single dedicated thread, so
    the event loop never blocks on the engine or a disk sync.  Properties
    are awaitable (``await aengine.now``); ``credit`` is the async view of
    ``engine.credit``; ``policy``, ``seed``, ``backend`` are plain.

    The engine's lock is shared with ``aengine.locked`` (a LockedEngine):
    synchronous threads may call the same engine through it, or pass a
    LockedEngine here to share its lock.  With an fsync-mode journal the
    writer runs every command already queued, then calls
    ``journal.commit()`` once for them all, then returns their results: a
    result is never handed out before its record is on disk.

    Cancelling the task that awaits a call does not withdraw a command that
    was already submitted: it still runs, its result is dropped.

    ``await aengine.close()`` (or leaving ``async with``) runs what is
    queued, then stops the thread; later calls raise ``EngineClosed``.  It
    leaves the engine open (``aengine.locked`` still works) unless
    ``close_engine=True``.
    """

    def __init__(self, engine: Engine | LockedEngine) -> None:
        self.locked = engine if isinstance(engine, LockedEngine) else LockedEngine(engine)
        self.engine: Engine = self.locked.engine
        self.lock = self.locked.lock
        self.policy = self.engine.policy
        self.seed = self.engine.seed
        self.backend = self.engine.backend
        self._target = self.engine
        self._writer = _Writer(self.lock, self.locked._group)
        # An AsyncEngine dropped without close() still ends its thread.
        self._finalizer = weakref.finalize(self, self._writer.stop)
        self.credit = AsyncCredit(self)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called (the queued commands may still be running)."""
        return self._writer.closed

    async def close(self, *, close_engine: bool = False) -> None:
        """Run the commands already queued, then stop the writer thread.  Idempotent.

        With ``close_engine=True`` the engine's own ``close()`` then runs too
        (a durable engine snapshots and releases its directory), under the
        lock, in a worker thread: the event loop does not wait for it.
        """
        self._writer.stop()
        await asyncio.wrap_future(self._writer.stopped)
        self._writer.thread.join()  # it has finished: this does not block
        if close_engine:
            await asyncio.to_thread(self.locked.close)

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    if TYPE_CHECKING:
        # The generated async methods and awaitable properties.
        def __getattr__(self, name: str) -> Any: ...

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<AsyncEngine ({state}) of {self.engine!r}>"


_install_async(AsyncEngine, Engine, ENGINE_NO_COMMIT)
_install_async(AsyncCredit, Credit, CREDIT_NO_COMMIT)
