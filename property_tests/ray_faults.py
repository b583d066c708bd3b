"""Fault injection for servers in Ray actors (guarantee 18): scenarios drawn by Hypothesis, run
in this process on real time, checked against invariants afterwards.

A scenario is one server (`Subject`) hosted by `trioserver._ray_host.Host`, the class Ray runs
as the actor, and trio callers that call it through `trioserver.ray` handles, whose caller side
(`trioserver._ray_caller`) is the one Ray users run. Between them, `Transport` plays Ray's part
in one process: an asyncio loop on a thread of its own runs the actor's methods as coroutines
(as Ray runs an async actor's), requests and replies are pickled both ways, ``ray.cancel``
cancels a request's coroutine, and killing the actor fails every request in flight with Ray's
own errors, then restarts it (a fresh object) if restarts are left. So every scenario crosses
the same three threads and two event loops a real call crosses, in milliseconds, with no
cluster. (A real process dies; here the killed host is stopped behind Ray's back, and what its
handlers do after the kill is not judged.)

The scenario draws the callers: the handler each one calls (returns at once; sleeps, short or
past its budget; waits for an event set from outside the actor, or never; hangs until its
budget; raises an exception that pickles, or one that cannot be rebuilt; returns a value that
cannot be pickled; or the call's argument cannot be; a cast; a statistics read), when it
calls, its limit (none, a short or a long deadline, or a cancellation at a drawn moment: before
its request is sent, while it is queued, while it runs), and which handle it uses (the one
`stop` goes through, or a second one, as `trioserver.ray.connect` gives another process); then
when the server is stopped (through one handle or both at once; sometimes cancelled at once,
which kills the actor), and whether and when its actor is killed (restarted or not). A few
scenarios also run on a real cluster (`run_on_cluster`, from tests/test_ray.py, whose
session fixture starts the cluster), checked against the same invariants where they can be
seen from outside the actor.

The server keeps its own record (`Record`): every handler run, with the request it served, the
object's life, when it started and ended, how it ended, and whether another handler held the
server meanwhile. `check` returns the violations of the invariants, each naming its invariant:

1. Exactly one outcome per call, and the right one: its handler's value or exception (a copy:
   same class and arguments, with the actor's traceback as a note; `NotSendable` for one that
   cannot be rebuilt), `CallTimeout` (only from a handler cut at its *own* budget), the
   caller's own cancellation (`trio.Cancelled`, caught by the caller's own scope, at or after
   its limit; or before it for a call refused by deadline-aware admission, on by default,
   which ends the call as its deadline: only a call that sent a deadline, and whose handler
   never ran), never `ServerOverloaded` (the actor's mailbox is unbounded), `ServerStopped`
   (only once `stop` was called), `ServerCrashed` (only for a call in flight when the actor
   was killed, or sent while it was restarting or dead). A request runs at most once, and a
   call whose handler returned or raised gets that reply unless its caller left first or the
   actor was killed meanwhile. No caller is still waiting at the end.
2. Nobody is told later than its limit plus `TOLERANCE`: a caller with a deadline or a
   cancellation hears by then; a `CallTimeout` comes within `TOLERANCE` of its handler's
   budget; a caller still waiting when `stop` returns (through either handle, or both at
   once) hears within `TOLERANCE` of it.
3. A caller's limit reaches the actor: no handler of a call starts, or is still running, later
   than its caller's limit plus `TOLERANCE`. So a request withdrawn while queued never runs
   (the server's record proves it); the one allowed exception is the documented race, a
   request that reached the front of the queue before its caller's cancellation reached the
   actor: it starts (and may finish) within `TOLERANCE` of the limit, and its caller hears
   `Cancelled` all the same.
4. Handlers never overlap, and start in the order their requests reached the actor (the
   server's record, per object life; guarantee 1).
5. A handler cut at its budget or its caller's deadline is cut on time: no handler runs more
   than `TOLERANCE` past its budget.
6. Statistics add up for each life that ended by `stop`: ``handled``, ``failed`` and
   ``timed_out + cancelled`` are exactly the handler runs that returned, raised and were cut
   (the server's record; a run that returned or raised as its caller left may be counted
   cancelled instead); nothing is running or queued after the stop; requests counted never
   exceed requests sent; with one life, ``timed_out`` covers every `CallTimeout` heard,
   ``shed`` covers every call with a deadline that ended before it without running (at most
   those that ended by their deadline without running too), and ``dropped`` covers every cast
   that was queued (its caster's ``await`` returned) and never ran.
7. Nothing is left: no trio task in the callers' run, no coroutine on the actor's asyncio loop
   (every request was answered or cancelled), and no thread (the hosts' trio threads and the
   loop's) once the scenario ended.
8. A stop is final: once `stop` returned (even if it raced a kill, or a restart), no handler
   starts, and a call through another handle hears `ServerStopped` (`ServerCrashed` if the
   actor was killed: Ray cannot tell a stop from a kill then), on a real cluster even after
   the time a restart takes.

The known behaviours of docs/beyond-one-machine.md are encoded where they apply, not by
loosening the rest: a caller told `Cancelled` may find its request ran (3, within the
tolerance); a call while the actor restarts gets `ServerCrashed` (1). Ray may lose a
cancellation that overtakes its call; the stand-in for Ray here always does (`Transport.cancel`),
and 3 holds all the same: the caller's withdrawal stops the call. A self-call through a
Ray handle (which times out rather than raise `DeadlockError`) is not generated.

Real time: the tolerance is for a busy 2-core machine (threads wait to be scheduled); the
figures of one large run are in docs/beyond-one-machine.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import math
import pickle
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import attrs
import ray as ray_api
import trio
from hypothesis import strategies as st
from ray import cloudpickle
from ray import exceptions as ray_errors

import trioserver.ray
from property_tests.faults import all_tasks
from trioserver import (
    CallTimeout,
    ServerCrashed,
    ServerOverloaded,
    ServerStatistics,
    ServerStopped,
    _ray_caller,
    call,
    cast,
    server,
    statistics,
)
from trioserver._ray_host import Host
from trioserver._spec import SPEC
from trioserver.ray import NotSendable

TOLERANCE = 0.1
"""Real seconds by which a caller may hear, or a handler end, after its limit: the time a
message takes from one thread to another on a busy 2-core machine (measured: see the docs)."""

NAP_BUDGET = 0.3
"""The budget of `Subject.nap` and `Subject.wait`; naps of `LONG_NAP` overrun it."""

HANG_BUDGET = 0.25
"""The budget of `Subject.hang`, which never returns on its own."""

LONG_NAP = 0.5

RESTART_DELAY = 0.02
"""How long a killed actor takes to come back, when it has restarts left."""

AFTER_STOP = "after-stop"
"""The request a caller makes through the second handle once `stop` returned."""

SCENARIO_LIMIT = 10.0
"""Real seconds a scenario may take; a caller still waiting then is a HANG."""

KINDS = (
    "quick",
    "nap",
    "wait",
    "hang",
    "boom",
    "unsendable",
    "lock",
    "badarg",
    "stats",
    "cast",
    "relay",
)
"""What a caller does: call a handler that returns at once (``quick``), sleeps (``nap``),
waits for the gate (``wait``), never returns (``hang``), raises an exception that crosses
(``boom``) or one that cannot be rebuilt (``unsendable``), returns a value that cannot be
pickled (``lock``); call with an argument that cannot be pickled (``badarg``: nothing is
sent); read the statistics (``stats``); cast (``cast``); or call a handler that calls its
own server through a `trioserver.ray` handle (``relay``, in this process only): that call
waits behind its own handler, which its budget cuts (`CallTimeout`, not `DeadlockError`:
a documented limit), and is withdrawn."""

NOT_SENDABLE = {"unsendable": "Unsendable", "lock": "could not be sent back", "badarg": "pickled"}
"""The kinds whose callers get `NotSendable`, and what its message says."""
CALL_BUDGETS = {"nap": NAP_BUDGET, "wait": NAP_BUDGET, "hang": HANG_BUDGET, "relay": HANG_BUDGET}

INNER = "-inner"
"""The suffix of the request a ``relay`` handler makes to its own server."""


# -- the server and its record --------------------------------------------------------------


class Boom(Exception):
    """What `Subject.boom` raises: pickles and rebuilds (its only argument is the request)."""


class Unsendable(Exception):
    """What `Subject.unsendable` raises: pickles, but cannot be rebuilt (``__init__`` wants
    two arguments and passes one to `Exception`), so the caller gets `NotSendable`."""

    def __init__(self, rid: str, why: str) -> None:
        super().__init__(f"{rid}: {why}")


@attrs.define
class Run:
    """One handler run, as the server recorded it (times: `time.perf_counter`)."""

    rid: str
    life: int
    method: str
    start: float
    end: float | None = None
    ending: str | None = None  # returned, raised, cancelled
    overlapped: bool = False  # another handler of the same life held the server at its start


@attrs.define
class Life:
    """One object of `Subject` (a restart makes another)."""

    index: int
    token: trio.lowlevel.TrioToken | None = None
    gate: trio.Event | None = None
    active: int = 0


class Record:
    """The server's own record, shared by every life of the object (as a test would read a
    database the actor writes to). In this process, in memory; in a real actor, appended to
    the file at `path` (one JSON line per life and per change of a run), so that a killed
    process's record survives it."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.runs: list[Run] = []
        self.lives: list[Life] = []
        self.gate_open = False
        self.handle: Any = None  # a handle to the server's own actor, for `Subject.relay`

    def new_life(self) -> Life:
        index = len(self.lives)
        if self.path is not None:  # (a restarted actor's record starts empty: count the file's)
            index = sum('"new_life"' in line for line in read_lines(self.path))
            self.write({"new_life": index})
        life = Life(index)
        self.lives.append(life)
        return life

    def started(self, run: Run) -> None:
        self.runs.append(run)
        self.write(attrs.asdict(run))

    def ended(self, run: Run) -> None:
        self.write(attrs.asdict(run))

    def write(self, line: dict[str, Any]) -> None:
        if self.path is not None:
            with open(self.path, "a") as file:
                file.write(json.dumps(line) + "\n")

    @classmethod
    def read(cls, path: str) -> Record:
        """The record an actor wrote to `path` (each run as its last line left it)."""
        record = cls()
        runs: dict[tuple[int, str, float], Run] = {}
        for line in read_lines(path):
            fields = json.loads(line)
            if "new_life" in fields:
                record.lives.append(Life(fields["new_life"]))
            else:
                run = Run(**fields)
                runs[run.life, run.rid, run.start] = run
        record.runs = sorted(runs.values(), key=lambda run: run.start)
        return record

    def open_gate(self) -> None:
        """From any thread: set the gate that `Subject.wait` waits for, in every life now and
        in those to come (in this process only)."""
        self.gate_open = True
        for life in self.lives:
            if life.token is not None and life.gate is not None:
                with contextlib.suppress(trio.RunFinishedError):
                    life.token.run_sync_soon(life.gate.set)


def read_lines(path: str) -> list[str]:
    try:
        with open(path) as file:
            return [line for line in file.read().splitlines() if line]
    except FileNotFoundError:
        return []


@server
class Subject:
    """The server under test: each handler records its run in the shared `Record`."""

    def __init__(self, record: Record | str) -> None:
        self.record = Record(record) if isinstance(record, str) else record  # (str: a file)
        self.life = self.record.new_life()

    async def on_start(self) -> None:
        self.life.gate = trio.Event()
        self.life.token = trio.lowlevel.current_trio_token()
        if self.record.gate_open:
            self.life.gate.set()

    @contextlib.contextmanager
    def running(self, rid: str, method: str) -> Iterator[None]:
        run = Run(rid, self.life.index, method, time.perf_counter())
        run.overlapped = self.life.active > 0
        self.life.active += 1
        self.record.started(run)
        try:
            yield
            run.ending = "returned"
        except Exception:
            run.ending = "raised"
            raise
        except BaseException:
            run.ending = "cancelled"
            raise
        finally:
            run.end = time.perf_counter()
            self.life.active -= 1
            self.record.ended(run)

    @call
    def quick(self, rid: str) -> str:
        with self.running(rid, "quick"):
            return rid

    @call(timeout=NAP_BUDGET)
    async def nap(self, rid: str, seconds: float) -> str:
        with self.running(rid, "nap"):
            await trio.sleep(seconds)
            return rid

    @call(timeout=NAP_BUDGET)
    async def wait(self, rid: str) -> str:
        with self.running(rid, "wait"):
            assert self.life.gate is not None
            await self.life.gate.wait()
            return rid

    @call(timeout=HANG_BUDGET)
    async def hang(self, rid: str) -> str:
        with self.running(rid, "hang"):
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    @call
    def boom(self, rid: str) -> str:
        with self.running(rid, "boom"):
            raise Boom(rid)

    @call
    def unsendable(self, rid: str) -> str:
        with self.running(rid, "unsendable"):
            raise Unsendable(rid, "no way back")

    @call
    def lock(self, rid: str) -> object:
        with self.running(rid, "lock"):
            return threading.Lock()  # cannot be pickled: the reply cannot cross

    @call(timeout=HANG_BUDGET)
    async def relay(self, rid: str) -> str:
        with self.running(rid, "relay"):
            inner: str = await self.record.handle.quick(rid + INNER)  # waits behind itself
            return inner

    @cast
    async def note(self, rid: str, seconds: float) -> None:
        with self.running(rid, "cast"):
            await trio.sleep(seconds)


# -- Ray's part, in this process ------------------------------------------------------------


class Ref:
    """What ``actor.method.remote(...)`` returns: a Ray reference, whose `future` the caller
    side waits on."""

    def __init__(self, transport: Transport, name: str) -> None:
        self.transport = transport
        self.name = name  # the actor method's
        self.result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.task: asyncio.Task[Any] | None = None  # the actor method's coroutine, once begun
        self.cancelled = False
        self.lost = False  # its cancellation overtook it, and was lost (`Transport.cancel`)

    def future(self) -> concurrent.futures.Future[Any]:
        return self.result

    def fail(self, error: BaseException) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self.result.set_exception(error)


class Method:
    def __init__(self, transport: Transport, name: str) -> None:
        self.transport = transport
        self.name = name

    def remote(self, *args: Any) -> Ref:
        return self.transport.submit(self.name, args)


class Actor:
    """The actor handle: ``actor.call.remote(request)`` and the like."""

    def __init__(self, transport: Transport) -> None:
        self.call = Method(transport, "call")
        self.statistics = Method(transport, "statistics")
        self.stop = Method(transport, "stop")
        self.ready = Method(transport, "ready")
        self.withdraw = Method(transport, "withdraw")
        self.__ray_terminate__ = Method(transport, "__ray_terminate__")


class FakeRay:
    """The two functions of Ray that trioserver.ray calls with references and handles."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def cancel(self, ref: Ref) -> None:
        self.transport.cancel(ref)

    def kill(self, actor: Actor, no_restart: bool = True) -> None:
        self.transport.kill(restart=not no_restart)


class Transport:
    """Ray between the callers and one actor: an asyncio loop on its own thread runs the
    host's methods; every request and reply is pickled; `cancel` is ``ray.cancel``; `kill`
    is the actor's process dying (``ray.kill``), with a restart if any is left."""

    def __init__(self, record: Record, restarts: int) -> None:
        self.record = record
        self.restarts = restarts
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="ray-faults asyncio loop", daemon=True
        )
        self.thread.start()
        self.hosts: list[Host] = []
        self.lock = threading.Lock()
        self.state = "alive"  # restarting, dead (killed), exited (stopped on purpose)
        self.in_flight: set[Ref] = set()
        self.killed: list[tuple[float, float | None]] = []  # (killed, back) for each kill
        self.leftover_tasks: list[str] = []
        self.arrivals: list[tuple[int, str]] = []  # (life, request) as each reached the actor
        self.doomed = False  # killed for good while it restarted
        self.lost_cancels = 0  # cancellations of calls that overtook them (`cancel`)
        self.hosts.append(Host(Subject, (record,)))

    @property
    def host(self) -> Host:
        return self.hosts[-1]

    def submit(self, name: str, args: tuple[Any, ...]) -> Ref:
        ref = Ref(self, name)
        try:
            args = cloudpickle.loads(cloudpickle.dumps(args))
        except Exception as exc:  # Ray raises TypeError in the caller: nothing is sent
            raise TypeError(f"could not serialize the arguments of {name}: {exc!r}") from exc
        with self.lock:
            state = self.state
            if state == "alive":
                self.in_flight.add(ref)
                host = self.host
        if state == "restarting":
            ref.fail(ray_errors.ActorUnavailableError("the actor is restarting", None))
        elif state == "dead":
            ref.fail(ray_errors.ActorDiedError())
        elif state == "exited":
            ref.fail(
                ray_errors.RayActorError(
                    error_msg=f"The actor exited ({_ray_caller.INTENDED_EXIT})."
                )
            )
        else:
            self.loop.call_soon_threadsafe(self.begin, ref, host, name, args)
        return ref

    def begin(self, ref: Ref, host: Host, name: str, args: tuple[Any, ...]) -> None:
        """On the loop: run the actor method as Ray runs an async actor's."""
        if ref.cancelled or (ref.result.done() and not ref.lost):  # (or the actor died)
            with self.lock:
                self.in_flight.discard(ref)
            return
        coroutine: Coroutine[Any, Any, Any]
        if name == "call":
            self.arrivals.append((self.hosts.index(host), args[0][1][0]))
        method = self.terminate if name == "__ray_terminate__" else getattr(host, name)
        coroutine = method(*args)
        ref.task = self.loop.create_task(coroutine)
        ref.task.add_done_callback(lambda task: self.replied(ref, task))

    def replied(self, ref: Ref, task: asyncio.Task[Any]) -> None:
        with self.lock:
            self.in_flight.discard(ref)
        if task.cancelled():
            ref.fail(ray_errors.TaskCancelledError())
            return
        error = task.exception()
        if error is not None:
            ref.fail(error)
            return
        try:
            reply = cloudpickle.loads(cloudpickle.dumps(task.result()))
        except Exception as exc:  # Ray: the reply could not be sent back
            ref.fail(ray_errors.RayTaskError("call", "", exc))
            return
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            ref.result.set_result(reply)

    async def terminate(self) -> None:
        """``__ray_terminate__``: the graceful exit after `stop` (the host answered every
        request it had; any other still in flight hears that the actor exited)."""
        with self.lock:
            self.state = "exited"
            others = [ref for ref in self.in_flight if ref.task is not asyncio.current_task()]
        for ref in others:
            ref.fail(ray_errors.RayActorError(error_msg=_ray_caller.INTENDED_EXIT))

    def cancel(self, ref: Ref) -> None:
        """``ray.cancel(ref)``: cancel the actor method's coroutine (or never start it). A
        cancellation that overtakes its call (made before the call's coroutine began) is
        lost, as Ray may lose it on a cluster: the call still comes, and runs unless its
        caller's withdrawal (`Host.withdraw`, sent after it) stops it."""
        ref.fail(ray_errors.TaskCancelledError())
        if ref.task is None and ref.name == "call":
            ref.lost = True
            self.lost_cancels += 1
            return
        ref.cancelled = True

        def cancel_task() -> None:
            if ref.task is not None:
                ref.task.cancel()

        with contextlib.suppress(RuntimeError):  # (the loop is closed)
            self.loop.call_soon_threadsafe(cancel_task)

    def kill(self, restart: bool) -> None:
        """From any thread but the loop's: the actor's process dies now. Every request in
        flight hears `ActorDiedError`; the old host is stopped behind Ray's back (a real
        process would just be gone); a restart makes a fresh object after `RESTART_DELAY`.
        Killed without restart while it restarts (``ray.kill(no_restart=True)``), it stays
        dead."""
        restart = restart and self.restarts != 0
        with self.lock:
            if self.state == "restarting" and not restart:
                self.doomed = True
                return
            if self.state != "alive":
                return
            self.state = "restarting" if restart else "dead"
            lost = list(self.in_flight)
            self.in_flight.clear()
            old = self.host
            killed = time.perf_counter()
        for ref in lost:
            ref.lost = False  # (a call whose cancellation was lost never comes: it died first)
            ref.fail(ray_errors.ActorDiedError())
        asyncio.run_coroutine_threadsafe(old.stop(), self.loop).result()
        if not restart:
            self.killed.append((killed, None))
            return
        self.restarts -= 1
        time.sleep(RESTART_DELAY)
        host = None if self.doomed else Host(Subject, (self.record,))
        with self.lock:
            if host is not None and not self.doomed:
                self.hosts.append(host)
                self.state = "alive"
            else:
                self.state = "dead"
        if host is not None and self.doomed:  # (killed while it started: it never served)
            asyncio.run_coroutine_threadsafe(host.stop(), self.loop).result()
            self.hosts.append(host)
        self.killed.append((killed, time.perf_counter() if self.state == "alive" else None))

    def close(self) -> None:
        """Stop every host still running, then the loop; note the coroutines left on it."""
        for host in self.hosts:
            asyncio.run_coroutine_threadsafe(host.stop(), self.loop).result()

        async def leftovers() -> list[str]:
            for _ in range(100):  # (cancelled coroutines need a few passes of the loop)
                others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                if not others:
                    return []
                await asyncio.sleep(0.01)
            return [repr(task) for task in others]

        self.leftover_tasks = asyncio.run_coroutine_threadsafe(leftovers(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@contextlib.contextmanager
def ray_replaced(fake: FakeRay) -> Iterator[None]:
    """Point trioserver.ray's two uses of Ray's functions (``ray.cancel``, ``ray.kill``) at
    `fake` for the block."""
    saved = (_ray_caller._ray, trioserver.ray._ray)
    _ray_caller._ray = trioserver.ray._ray = fake
    try:
        yield
    finally:
        _ray_caller._ray, trioserver.ray._ray = saved


def handle_for(actor: Actor, name: str | None) -> Any:
    """A `trioserver.ray` handle to the actor, as `start` (name None) or `connect` give."""
    return trioserver.ray._handle(getattr(Subject, SPEC), actor, name)


# -- the scenario ---------------------------------------------------------------------------


@attrs.frozen
class CallerSpec:
    index: int
    kind: str  # one of KINDS
    seconds: float  # a nap's or a cast's sleep
    start: float  # when it calls, after the scenario's start
    limit: str  # none, deadline, cancel
    after: float  # the deadline, or when it is cancelled after it called
    other_handle: bool  # calls through the second handle (as `connect` gives), not `stop`'s

    @property
    def rid(self) -> str:
        return f"c{self.index}"

    def __str__(self) -> str:
        what = {
            "nap": f"nap({self.seconds})",
            "cast": f"note({self.seconds}) (a cast)",
            "wait": "wait() (for the gate)",
        }.get(self.kind, f"{self.kind}()")
        limit = {
            "none": "",
            "deadline": f" under move_on_after({self.after})",
            "cancel": f", cancelled {self.after} s after it called",
        }[self.limit]
        handle = "the second handle" if self.other_handle else "the first handle"
        return f"caller {self.rid} at t+{self.start}: {what} through {handle}{limit}"


@attrs.frozen
class Scenario:
    callers: tuple[CallerSpec, ...]
    gate_at: float | None  # when the gate opens (None: never)
    stop_at: float | None  # None: once every caller has finished
    kill_at: float | None  # when the actor's process dies (None: never)
    restarts: int  # how many restarts Ray allows
    second_stop: bool  # the second handle stops it too, at the same time
    stop_within: float | None = None  # the stop is cancelled after this long (then kills)

    def __str__(self) -> str:
        stop = "once every caller finished" if self.stop_at is None else f"at t+{self.stop_at}"
        lines = [
            f"Subject in an actor (max_restarts={self.restarts}), stopped {stop}; "
            f"gate opened {'never' if self.gate_at is None else f'at t+{self.gate_at}'}"
        ]
        if self.second_stop:
            lines.append("stopped through both handles at once")
        if self.stop_within is not None:
            lines.append(f"the stop is cancelled after {self.stop_within} s")
        if self.kill_at is not None:
            lines.append(f"its process dies at t+{self.kill_at}")
        lines += [f"    {c}" for c in self.callers]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("\n" + str(self))


@st.composite
def caller_specs(draw: st.DrawFn, index: int, self_calls: bool = True) -> CallerSpec:
    kind = draw(st.sampled_from(KINDS if self_calls else KINDS[:-1]))
    seconds = 0.0
    if kind == "nap":
        seconds = draw(st.sampled_from([0.0, 0.01, 0.05, LONG_NAP]))
    elif kind == "cast":
        seconds = draw(st.sampled_from([0.0, 0.02]))
    limit = draw(st.sampled_from(["none", "none", "deadline", "cancel"]))
    after = 0.0
    if limit == "deadline":
        after = draw(st.sampled_from([0.03, 0.6]))  # short, long
    elif limit == "cancel":
        # at once (before it is sent, or as it arrives), or later (queued or running)
        after = draw(st.sampled_from([0.0, 0.005, 0.03, 0.12]))
    return CallerSpec(
        index=index,
        kind=kind,
        seconds=seconds,
        start=draw(st.sampled_from([0.0, 0.0, 0.01, 0.05, 0.1])),
        limit=limit,
        after=after,
        other_handle=draw(st.booleans()),
    )


@st.composite
def scenarios(draw: st.DrawFn, kills: bool = True, in_process: bool = True) -> Scenario:
    """Scenarios; for a real actor (`in_process` False), no gate opens (an actor in another
    process cannot be reached from outside its server: `Subject.wait` then waits until its
    budget), and no handler calls its own server (`relay`)."""
    count = draw(st.integers(1, 7))
    callers = [draw(caller_specs(index, in_process)) for index in range(count)]
    kill_at = None
    restarts = 0
    if kills and draw(st.integers(0, 3)) == 0:
        kill_at = draw(st.sampled_from([0.005, 0.02, 0.06]))
        restarts = draw(st.sampled_from([0, 1]))
        # the kill finds a handler running: the first caller's, which takes a while
        first = callers[0]
        kind = draw(st.sampled_from(["hang", "wait", "nap"]))
        callers[0] = attrs.evolve(first, kind=kind, seconds=LONG_NAP, start=0.0)
    return Scenario(
        callers=tuple(callers),
        gate_at=draw(st.sampled_from([None, 0.02, 0.1])) if in_process else None,
        stop_at=draw(st.sampled_from([None, None, 0.03, 0.08, 0.2])),
        kill_at=kill_at,
        restarts=restarts,
        second_stop=draw(st.integers(0, 3)) == 0,
        stop_within=draw(st.sampled_from([None] * 6 + [0.0, 0.001])),
    )


# -- running it -----------------------------------------------------------------------------


@attrs.define
class CallRecord:
    spec: CallerSpec
    sent: float = math.nan  # when the call was made (perf_counter)
    limit: float = math.inf  # when its caller leaves: its deadline, or its cancellation
    finish: float | None = None
    outcome_kind: str | None = None  # value, exception, cancelled
    outcome: object = None

    def describe(self, t0: float) -> str:
        def at(t: float | None) -> str:
            return "never" if t is None else f"t+{t - t0:.3f}"

        limit = "" if self.limit == math.inf else f", limit {at(self.limit)}"
        told = self.outcome_kind if self.outcome_kind != "exception" else repr(self.outcome)
        return f"{self.spec.rid}: sent {at(self.sent)}{limit}; told {told} at {at(self.finish)}"


@attrs.define
class Log:
    scenario: Scenario
    record: Record = attrs.Factory(Record)
    t0: float = 0.0
    calls: list[CallRecord] = attrs.Factory(list)
    stop_called: float | None = None
    stop_done: float | None = None
    after_stop: object = None  # what a call made once the stop returned heard
    killed: list[tuple[float, float | None]] = attrs.Factory(list)
    arrivals: list[tuple[int, str]] = attrs.Factory(list)
    lost_cancels: int = 0  # in this process: cancellations that overtook their call, lost
    lives_stopped: set[int] = attrs.Factory(set)  # lives that ended by `stop`
    stats: dict[int, Any] = attrs.Factory(dict)  # each life's statistics after its end
    # on a cluster, when they were asked for and when they came (read before the stop)
    stats_window: dict[int, tuple[float, float]] = attrs.Factory(dict)
    hang: bool = False
    on_cluster: bool = False
    errors: list[str] = attrs.Factory(list)
    leftover_trio: list[str] = attrs.Factory(list)
    leftover_asyncio: list[str] = attrs.Factory(list)
    leftover_threads: list[str] = attrs.Factory(list)


async def run_caller(log: Log, spec: CallerSpec, handle: Any, done: Callable[[], None]) -> None:
    record = CallRecord(spec)
    log.calls.append(record)
    try:
        await trio.sleep(spec.start)
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                record.sent = time.perf_counter()
                if spec.limit == "deadline":
                    scope.deadline = trio.current_time() + spec.after
                    record.limit = record.sent + spec.after
                elif spec.limit == "cancel":
                    nursery.start_soon(cancel_after, record, scope, spec.after)
                try:
                    record.outcome = await make_call(handle, spec)
                    record.outcome_kind = "value"
                except Exception as error:
                    record.outcome_kind, record.outcome = "exception", error
            nursery.cancel_scope.cancel()  # (the canceller, if it has not fired)
            if scope.cancelled_caught:
                record.outcome_kind = "cancelled"
            record.finish = time.perf_counter()
    finally:
        done()


async def cancel_after(record: CallRecord, scope: trio.CancelScope, seconds: float) -> None:
    await trio.sleep(seconds)
    record.limit = time.perf_counter()
    scope.cancel()


async def make_call(handle: Any, spec: CallerSpec) -> object:
    rid = spec.rid
    if spec.kind == "stats":
        return await trioserver.ray.statistics(handle)
    if spec.kind == "badarg":
        return await handle.quick(threading.Lock())
    if spec.kind == "nap":
        return await handle.nap(rid, spec.seconds)
    if spec.kind == "cast":
        return await handle.note(rid, spec.seconds)
    return await getattr(handle, spec.kind)(rid)


async def stop(first: Any, second: Any | None, within: float | None = None) -> None:
    """`trioserver.ray.stop` through the first handle, and through the second at the same
    time if given (as another process may); cancelled after `within` seconds if given (the
    stop then kills the actor)."""

    async def through(handle: Any) -> None:
        with trio.move_on_after(math.inf if within is None else within):
            with contextlib.suppress(ServerStopped, ServerCrashed):
                await trioserver.ray.stop(handle)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(through, first)
        if second is not None:
            nursery.start_soon(through, second)


async def at(t0: float, moment: float) -> None:
    await trio.sleep_until(t0 + moment)


async def scenario_main(log: Log, transport: Transport) -> None:
    scenario = log.scenario
    before = set(all_tasks())
    t0 = trio.current_time()
    log.t0 = time.perf_counter()
    actor = Actor(transport)
    first, second = handle_for(actor, None), handle_for(actor, "subject")
    log.record.handle = handle_for(actor, "subject")  # (for `Subject.relay`: its own)
    callers_done = trio.Event()
    remaining = len(scenario.callers)

    def one_done() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            callers_done.set()

    async def open_gate(moment: float) -> None:
        await at(t0, moment)
        log.record.open_gate()

    async def kill(moment: float) -> None:
        await at(t0, moment)
        await trio.to_thread.run_sync(transport.kill, True)

    with trio.move_on_after(SCENARIO_LIMIT) as limit:
        async with trio.open_nursery() as nursery:
            if scenario.gate_at is not None:
                nursery.start_soon(open_gate, scenario.gate_at)
            if scenario.kill_at is not None:
                nursery.start_soon(kill, scenario.kill_at)
            for spec in scenario.callers:
                handle = second if spec.other_handle else first
                nursery.start_soon(run_caller, log, spec, handle, one_done)
            if scenario.stop_at is None:
                await callers_done.wait()
            else:
                await at(t0, scenario.stop_at)
            log.stop_called = time.perf_counter()  # (maybe while a kill restarts the actor)
            await stop(first, second if scenario.second_stop else None, scenario.stop_within)
            log.stop_done = time.perf_counter()
            await callers_done.wait()
            nursery.cancel_scope.cancel()  # (the gate and the kill, if still to come)
        # (a kill that had begun has finished, its restart too: the nursery waited for it)
        log.after_stop = await call_after_stop(second)
    log.hang = limit.cancelled_caught
    me = trio.lowlevel.current_task()
    log.leftover_trio = [t.name for t in all_tasks() if t not in before and t is not me]


async def call_after_stop(handle: Any, within: float = 0.0) -> object:
    """What a call through `handle` (not the one `stop` went through) hears once the stop
    returned: its value or exception. With `within`, call again while it hears
    `ServerCrashed` (an actor that Ray may be restarting), for that long."""
    give_up = trio.current_time() + within
    while True:
        try:
            return await handle.quick(AFTER_STOP)
        except ServerCrashed as error:
            if trio.current_time() >= give_up:
                return error
        except Exception as error:
            return error
        await trio.sleep(0.1)


def run_scenario(scenario: Scenario) -> Log:
    log = Log(scenario)
    threads_before = set(threading.enumerate())
    transport = Transport(log.record, scenario.restarts)
    try:
        with ray_replaced(FakeRay(transport)):
            trio.run(scenario_main, log, transport)
    except BaseException as error:  # a scenario must never raise: report it as a violation
        if isinstance(error, KeyboardInterrupt):
            raise
        log.errors.append(f"the scenario raised {error!r}")
    finally:
        transport.close()
        log.killed = list(transport.killed)
        log.arrivals = list(transport.arrivals)
        log.lost_cancels = transport.lost_cancels
        log.leftover_asyncio = transport.leftover_tasks
    killed_lives = len(log.killed)  # each kill ended the life it found
    for index, host in enumerate(transport.hosts):
        if index >= killed_lives:  # (the others were killed)
            log.lives_stopped.add(index)
        log.stats[index] = statistics(host._handle) if host._handle is not None else None
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and new_threads(threads_before):
        time.sleep(0.01)
    log.leftover_threads = new_threads(threads_before)
    return log


# -- the same scenarios, against a real Ray cluster ----------------------------------------


def run_on_cluster(scenario: Scenario) -> Log:
    """Run `scenario` against a real actor of the Ray cluster this process is connected to
    (``ray.init``), with `trioserver.ray.start`, `ray.kill` and `trioserver.ray.stop`; the
    server's record goes through a file (scenarios drawn with ``in_process=False``).

    What cannot be seen from here is not checked: the actor's coroutines and threads, and
    the statistics of a server that `stop` ended (they are read before the stop, once every
    caller has finished, when the scenario stops then)."""
    log = Log(scenario, on_cluster=True)
    with tempfile.TemporaryDirectory(prefix="ray-faults-") as directory:
        path = str(Path(directory) / "record.jsonl")
        try:
            trio.run(cluster_main, log, path)
        except BaseException as error:  # a scenario must never raise: report it
            if isinstance(error, KeyboardInterrupt):
                raise
            log.errors.append(f"the scenario raised {error!r}")
        log.record = Record.read(path)
    return log


async def cluster_main(log: Log, path: str) -> None:
    scenario = log.scenario
    before = set(all_tasks())
    first = await trioserver.ray.start(Subject, path, max_restarts=scenario.restarts)
    second = pickle.loads(pickle.dumps(first))  # the same actor, as another process sees it
    t0 = trio.current_time()
    log.t0 = time.perf_counter()
    callers_done = trio.Event()
    remaining = len(scenario.callers)
    stopping = trio.Lock()

    def one_done() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            callers_done.set()

    async def kill(moment: float) -> None:
        await at(t0, moment)
        async with stopping:
            killed = time.perf_counter()
            ray_api.kill(trioserver.ray.actor(first), no_restart=scenario.restarts == 0)
        back = None
        if scenario.restarts:
            # Back once the new object exists (`ray.kill` is asynchronous: the old process
            # answers for a few ms) and a request reaches it.
            lives = len(log.killed) + 1  # the lives so far, the killed one's included
            while len(Record.read(path).lives) == lives and log.stop_called is None:  # noqa: ASYNC110 (a file another process writes)
                await trio.sleep(0.005)
            while log.stop_called is None:
                try:
                    await trioserver.ray.statistics(first)
                    back = time.perf_counter()
                    break
                except ServerCrashed:
                    await trio.sleep(0.005)
                except ServerStopped:  # (stopped meanwhile)
                    break
        log.killed.append((killed, back))

    with trio.move_on_after(SCENARIO_LIMIT + 30) as limit:  # (a restart takes seconds)
        async with trio.open_nursery() as nursery:
            if scenario.kill_at is not None:
                nursery.start_soon(kill, scenario.kill_at)
            for spec in scenario.callers:
                handle = second if spec.other_handle else first
                nursery.start_soon(run_caller, log, spec, handle, one_done)
            if scenario.stop_at is None:
                await callers_done.wait()
            else:
                await at(t0, scenario.stop_at)
            async with stopping:
                life = len(log.killed)
                settled = scenario.kill_at is None or (log.killed and log.killed[-1][1])
                if scenario.stop_at is None and settled:
                    asked = time.perf_counter()
                    log.stats[life] = await quiet_statistics(first)
                    log.stats_window[life] = (asked, time.perf_counter())
                    log.lives_stopped.add(life)
                log.stop_called = time.perf_counter()  # (maybe while Ray restarts the actor)
                await stop(first, second if scenario.second_stop else None, scenario.stop_within)
                log.stop_done = time.perf_counter()
                if scenario.stop_within is not None:  # (a stop cancelled so soon kills it)
                    log.killed.append((log.stop_called, None))
            await callers_done.wait()
            nursery.cancel_scope.cancel()
        # A restart takes about a second: a stopped actor that Ray restarts would serve again.
        log.after_stop = await call_after_stop(second, 3.0 if scenario.kill_at else 0.0)
    log.hang = limit.cancelled_caught
    me = trio.lowlevel.current_task()
    log.leftover_trio = [t.name for t in all_tasks() if t not in before and t is not me]


async def quiet_statistics(handle: Any) -> Any:
    """The server's statistics once nothing runs or waits (a handler whose caller left may
    still be on its way out)."""
    with trio.move_on_after(2.0):
        while True:
            stats = await trioserver.ray.statistics(handle)
            if not stats.running and not stats.queued:
                return stats
            await trio.sleep(0.01)
    return await trioserver.ray.statistics(handle)


def new_threads(before: set[threading.Thread]) -> list[str]:
    """Threads that did not run before, other than trio's idle cached workers (trio keeps
    one for 10 s after its job, named ``Trio thread N``: its cache, not a leak)."""
    return [
        t.name
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith("Trio thread ")
    ]


# -- the invariants -------------------------------------------------------------------------


def check(log: Log) -> list[str]:
    """The violations of the invariants in one scenario's log, each naming its invariant."""
    problems = list(log.errors)
    t0 = log.t0

    def bad(invariant: str, message: str) -> None:
        problems.append(f"invariant {invariant}: {message}")

    def when(t: float) -> str:
        return f"t+{t - t0:.3f}"

    runs: dict[str, list[Run]] = {}
    for run in log.record.runs:
        runs.setdefault(run.rid, []).append(run)
    kills = [killed for killed, _ in log.killed]

    def judged(run: Run) -> bool:
        """Whether the run happened while its life was the actor (not after its kill)."""
        return run.life >= len(kills) or run.start < kills[run.life]

    # 1-3, 5: each call
    for record in log.calls:
        spec = record.spec
        story = record.describe(t0)
        mine = runs.get(spec.rid, [])
        if record.finish is None:
            bad("1 (HANG)" if log.hang else "1", f"{story}: never told")
            continue
        if len(mine) > 1:
            bad("1 (at most once)", f"{story}: its request ran {len(mine)} times")
        # `ran`: what the record shows it did (a reply needs it); `run`, the same unless the
        # process was being killed as it ran (on a cluster, `ray.kill` takes a few ms to
        # end the process), which the time bounds below do not judge
        ran = run = mine[0] if mine else None
        lost = any(record.sent <= killed <= record.finish for killed in kills) or any(
            killed <= record.sent and (back is None or record.sent <= back)
            for killed, back in log.killed
        )
        if run is not None and not judged(run):
            run = None  # the process was dead: what it did is not judged
        kind, outcome = record.outcome_kind, record.outcome
        if kind == "value" and spec.kind == "stats":
            if not isinstance(outcome, ServerStatistics) or outcome.running > 1:
                bad("1/4", f"{story}: not statistics of a server running one handler at most")
        elif kind == "value":
            expected = None if spec.kind == "cast" else spec.rid
            if outcome != expected:
                bad("1", f"{story}: the value {outcome!r}, not {expected!r}")
            if spec.kind != "cast" and (ran is None or ran.ending != "returned"):
                bad("1", f"{story}: a value, but its handler did not return")
        elif kind == "cancelled":
            if spec.limit == "none":
                bad("1", f"{story}: Cancelled, with no limit of its own")
            elif record.finish < record.limit and not refusable(record, mine):
                bad("1", f"{story}: Cancelled before its limit")
        elif isinstance(outcome, Boom):
            if spec.kind != "boom" or outcome.args != (spec.rid,):
                bad("1", f"{story}: not its handler's exception")
            elif ran is None or ran.ending != "raised":
                bad("1", f"{story}: its handler's exception, but it did not raise")
            elif not any("raised in the Ray actor" in note for note in outcome.__notes__):
                bad("1", f"{story}: no note of the actor's traceback")
        elif isinstance(outcome, NotSendable):
            says = NOT_SENDABLE.get(spec.kind)
            ending = {"unsendable": "raised", "lock": "returned"}.get(spec.kind)
            if says is None or says not in str(outcome):
                bad("1", f"{story}: NotSendable, but nothing unsendable was sent")
            elif ending is None and (mine or record.finish - record.sent > TOLERANCE):
                bad("1/9", f"{story}: its arguments cannot be sent, yet not refused at once")
            elif ending is not None and (ran is None or ran.ending != ending):
                bad("1", f"{story}: NotSendable, but its handler had not {ending}")
        elif isinstance(outcome, CallTimeout):
            budget = CALL_BUDGETS.get(spec.kind)
            if budget is None:
                bad("1", f"{story}: CallTimeout from a handler without a budget")
            elif ran is None or ran.ending != "cancelled" or ran.end is None:
                bad("1", f"{story}: CallTimeout, but its handler was not cut")
            else:
                if ran.end - ran.start < budget - 0.002:  # (trio's clock rounds)
                    bad("1/4", f"{story}: CallTimeout, but its handler was cut before its budget")
                if record.finish > ran.start + budget + TOLERANCE:
                    bad("2", f"{story}: CallTimeout later than its handler's budget")
        elif isinstance(outcome, ServerStopped):
            if log.stop_called is None or record.finish < log.stop_called:
                bad("1", f"{story}: ServerStopped before stop was called")
        elif isinstance(outcome, ServerCrashed):
            if not lost:
                bad("1", f"{story}: ServerCrashed, but no kill touched it")
        elif isinstance(outcome, ServerOverloaded):
            # admission ends a refused call as its caller's deadline; ServerOverloaded is only
            # for a full mailbox, and the actor's is unbounded
            bad("1", f"{story}: ServerOverloaded from an unbounded mailbox")
        else:
            bad("1", f"{story}: not an allowed outcome")
        # a call whose handler returned or raised hears that, unless it left or was lost (then
        # ServerCrashed, or ServerStopped through the handle of a stop that killed the actor)
        if (
            run is not None
            and spec.kind != "cast"
            and run.ending in ("returned", "raised")
            and kind == "exception"
            and not isinstance(outcome, Boom)
            and not (spec.kind in NOT_SENDABLE and isinstance(outcome, NotSendable))
            and not (lost and isinstance(outcome, ServerCrashed | ServerStopped))
        ):
            bad("1", f"{story}: its handler {run.ending}, but it heard {outcome!r}")
        # 2: told by its limit, and by the time a stop returned
        if record.finish > record.limit + TOLERANCE:
            bad("2", f"{story}: told {record.finish - record.limit:.3f} s after its limit")
        stopped = log.stop_done
        if stopped is not None and record.sent < stopped and record.finish > stopped + TOLERANCE:
            bad("2 (stop)", f"{story}: still waiting when stop returned at {when(stopped)}")
        # 3: its limit reached the actor (casts are queued at once and run regardless), even
        # when Ray lost the cancellation of a call it overtook (the caller withdraws it too)
        if run is not None and spec.kind != "cast" and record.limit != math.inf:
            if run.start > record.limit + TOLERANCE:
                bad("3 (withdrawn)", f"{story}: its handler started at {when(run.start)}")
            if run.end is not None and run.end > record.limit + TOLERANCE:
                bad("3 (cut)", f"{story}: its handler ran until {when(run.end)}")
    # 4, 5: the server's record
    for run in log.record.runs:
        if not judged(run):
            continue
        where = f"the handler of {run.rid} (life {run.life}, {when(run.start)})"
        if run.overlapped:
            bad("4", f"{where} started while another handler held the server")
        if run.end is None and run.life >= len(kills):  # (a killed process ends nothing)
            bad("5", f"{where} never ended")
        if run.rid.endswith(INNER):  # a relay's call to its own server, withdrawn when cut
            relays = [r for r in log.record.runs if r.rid + INNER == run.rid]
            ends = [r.end for r in relays if r.end is not None]
            if not ends or run.start > min(ends) + TOLERANCE:
                bad("3 (withdrawn)", f"{where}: its caller, a relay handler, had left")
        budget = CALL_BUDGETS.get(run.method)
        if budget is not None and run.end is not None and run.end - run.start > budget + TOLERANCE:
            bad("5", f"{where} ran {run.end - run.start:.3f} s, past its budget of {budget}")
    # (known in this process only: on a cluster, Ray's order of arrival is not seen)
    arrived = {arrival: n for n, arrival in enumerate(log.arrivals)}
    started = sorted((run for run in log.record.runs if judged(run)), key=lambda run: run.start)
    if not arrived:
        started = []
    for before, after in itertools.pairwise(started):
        first = arrived.get((before.life, before.rid), -1)
        second = arrived.get((after.life, after.rid), -1)
        if after.life == before.life and not first < second:
            bad(
                "4 (order)",
                f"the handler of {after.rid} started after {before.rid}'s, but its request "
                f"reached the actor first (arrival order {[r for _, r in log.arrivals]})",
            )
    # 8: a stop is final
    after = log.after_stop
    if log.stop_done is not None and not log.hang:
        if not isinstance(after, ServerStopped | ServerCrashed):
            bad("8", f"a call made once stop returned heard {after!r}")
        elif isinstance(after, ServerCrashed) and not log.killed:
            bad("8", f"a call made once stop returned heard {after!r}, with no kill")
        for run in log.record.runs:
            if run.start > log.stop_done and judged(run):
                bad("8", f"the handler of {run.rid} (life {run.life}) started after stop returned")
    # 6: statistics of each life that ended by stop
    callers_left = {c.spec.rid for c in log.calls if c.outcome_kind == "cancelled"}
    if not log.hang and not log.errors:
        for index in sorted(log.lives_stopped):
            stats = log.stats.get(index)
            if stats is None:
                continue
            theirs = [run for run in log.record.runs if run.life == index]
            window = log.stats_window.get(index)
            where = f"life {index} after its stop: {stats!r}"

            # a handler that returned or raised as its caller left may be counted cancelled
            # (its request abandoned a moment before it ended): which, the actor's timing says
            left = [
                run
                for run in theirs
                if run.ending in ("returned", "raised") and run.rid in callers_left
            ]
            for counter, value, endings in (
                ("handled", stats.handled, ("returned",)),
                ("failed", stats.failed, ("raised",)),
                ("timed_out + cancelled", stats.timed_out + stats.cancelled, ("cancelled",)),
            ):
                low, high = ended(theirs, window, endings)
                if endings == ("cancelled",):
                    high += len(left)
                else:
                    low -= sum(run.ending in endings for run in left)
                if not low <= value <= high:
                    bad("6", f"{where}: {counter}, but {low}-{high} handlers {endings[0]}")
            if stats.running or stats.queued:
                bad("6", f"{where}: running or queued after the stop")
            counted = (
                stats.handled
                + stats.failed
                + stats.timed_out
                + stats.cancelled
                + stats.withdrawn
                + stats.dropped
                + stats.shed
            )
            sent = len(log.calls) + sum(run.method == "relay" for run in theirs)
            if counted > sent:
                bad("6", f"{where}: {counted} requests counted, {sent} sent")
            if not log.killed:  # one life heard everything
                timeouts = sum(isinstance(c.outcome, CallTimeout) for c in log.calls)
                if stats.timed_out < timeouts:
                    bad("6", f"{where}: timed_out, but {timeouts} callers heard CallTimeout")
                dropped = sum(
                    c.spec.kind == "cast" and c.outcome_kind == "value" and c.spec.rid not in runs
                    for c in log.calls
                )
                if stats.dropped < dropped and window is None:  # (drops come with the stop)
                    bad("6", f"{where}: dropped, but {dropped} casts were queued and never ran")
                # refused by admission: ended before their limit (private trio access) or at
                # it (public trio), their handler never run
                unrun = [
                    c
                    for c in log.calls
                    if c.outcome_kind == "cancelled" and refusable(c, runs.get(c.spec.rid, []))
                ]
                early = sum(c.finish is not None and c.finish < c.limit for c in unrun)
                if not early <= stats.shed <= len(unrun):
                    bad(
                        "6",
                        f"{where}: shed, but {early} callers ended before their limit without "
                        f"running ({len(unrun)} by it)",
                    )
    # 7: nothing left
    if log.leftover_trio:
        bad("7", f"trio tasks left in the callers' run: {log.leftover_trio}")
    if log.leftover_asyncio:
        bad("7", f"coroutines left on the actor's loop: {log.leftover_asyncio}")
    if log.leftover_threads:
        bad("7", f"threads left: {log.leftover_threads}")
    return problems


def ended(
    runs: list[Run], window: tuple[float, float] | None, endings: tuple[str, ...]
) -> tuple[int, int]:
    """How many `runs` ended as `endings` say: exactly; or, with statistics read at `window`
    (asked, replied) while requests may still arrive, at least those that ended before they
    were asked for and at most those that started before they came."""
    if window is None:
        n = sum(run.ending in endings for run in runs)
        return n, n
    asked, replied = window
    low = sum(run.ending in endings and (run.end or math.inf) < asked for run in runs)
    high = sum(run.ending in endings and run.start < replied for run in runs)
    return low, high


def report(log: Log, problems: list[str]) -> str:
    t0 = log.t0
    lines = [str(log.scenario), "", "what happened:"]
    lines += [f"  {c.describe(t0)}" for c in log.calls]
    for run in log.record.runs:
        end = "never ended" if run.end is None else f"{run.ending} at t+{run.end - t0:.3f}"
        lines.append(
            f"  handler {run.method} of {run.rid} (life {run.life}): started "
            f"t+{run.start - t0:.3f}, {end}"
        )
    for killed, back in log.killed:
        again = "not restarted" if back is None else f"back at t+{back - t0:.3f}"
        lines.append(f"  the actor's process died at t+{killed - t0:.3f}, {again}")
    if log.stop_called is not None and log.stop_done is not None:
        lines.append(
            f"  stop called at t+{log.stop_called - t0:.3f}, returned at t+{log.stop_done - t0:.3f}"
        )
    for index, stats in sorted(log.stats.items()):
        lines.append(f"  life {index}: statistics {stats!r}")
    lines += ["", "violations:", *(f"  {p}" for p in problems)]
    return "\n".join(lines)


def events(log: Log) -> list[str]:
    """What a scenario reached, for ``pytest --hypothesis-show-statistics``."""
    found = []
    ran = {run.rid: run for run in log.record.runs}
    for record in log.calls:
        kind = record.outcome_kind
        name = type(record.outcome).__name__ if kind == "exception" else kind
        found.append(f"{record.spec.kind}: {name}")
        run = ran.get(record.spec.rid)
        if kind == "cancelled" and record.spec.kind != "cast":
            if run is None:
                found.append("a caller left before its handler started: it never ran")
            elif run.start >= record.limit:
                found.append("the documented race: a handler started as its caller left")
            elif run.ending == "cancelled":
                found.append("a caller left while its handler ran: the handler was cut")
            else:
                found.append("the documented race: a handler finished as its caller left")
            if run is not None and run.end is not None and run.end > record.limit + TOLERANCE:
                found.append("Ray lost a cancellation that overtook its request")
        if record.finish is not None and record.limit != math.inf and kind == "cancelled":
            late = lateness(record.finish - record.limit)
            found.append(f"a caller was told it left {late} its limit")
        if run is not None and run.end is not None and spec_limited(record):
            found.append(f"a handler ended {lateness(run.end - record.limit)} its caller's limit")
    if log.lost_cancels:
        found.append("a cancellation overtook its call and was lost: the call was withdrawn")
    for killed, back in log.killed:
        if any(r.sent <= killed <= (r.finish or math.inf) for r in log.calls):
            found.append("the actor died with calls in flight")
        if back is not None and any(killed <= r.sent <= back for r in log.calls):
            found.append("a call was sent while the actor restarted")
        if back is not None and any(run.life > 0 for run in log.record.runs):
            found.append("a restarted actor ran handlers")
    return found


def refusable(record: CallRecord, runs: list[Run]) -> bool:
    """Whether admission may have refused `record`'s call, ending it as its caller's deadline
    (on private trio access at once, on public trio at the deadline): a call that sent a
    deadline and whose handler never ran."""
    return (
        record.spec.limit == "deadline" and record.spec.kind not in ("cast", "stats") and not runs
    )


def spec_limited(record: CallRecord) -> bool:
    return record.spec.kind != "cast" and record.limit != math.inf


def lateness(seconds: float) -> str:
    """A bucket of how late something came after a limit (for the events)."""
    if seconds <= 0:
        return "before"
    for bound in (0.001, 0.005, 0.02, TOLERANCE):
        if seconds <= bound:
            return f"within {bound * 1000:g} ms after"
    return f"more than {TOLERANCE * 1000:g} ms after"
