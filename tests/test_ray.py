"""Guarantee 18: a server hosted in a Ray actor (`trioserver.ray`), against a real local Ray
cluster started once for the session (loopback only, token auth with a token of its own).

Real processes and real time: margins are generous (two loaded CPUs). Each test stops the
servers it starts; the session's fixture (tests/ray_cluster.py) shuts the cluster down with
`ray.shutdown()` and checks that none of its processes are left.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given

ray = pytest.importorskip("ray", reason="Ray is not installed (the extra trioserver[ray])")

import trioserver  # noqa: E402
import trioserver.ray  # noqa: E402
from property_tests import ray_faults  # noqa: E402
from trioserver import (  # noqa: E402
    CallTimeout,
    InvalidServerDefinition,
    ServerCrashed,
    ServerStopped,
    TrioServerError,
    _private,
)
from trioserver.ray import NotSendable  # noqa: E402

from .ray_cluster import NAMESPACE  # noqa: E402
from .ray_servers import (  # noqa: E402
    Failing,
    Local,
    Mailer,
    Probe,
    Relay,
    SeatTaken,
    Theater,
)

ROOT = Path(__file__).resolve().parent.parent  # the checkout: its `tests` is importable


pytestmark = pytest.mark.usefixtures("ray_cluster")


# -- calls, casts, stop ---------------------------------------------------------------------


async def _until(check: Any, within: float = 30.0) -> None:
    """Wait (polling) until ``await check()`` is true; fail after `within` seconds."""
    with trio.fail_after(within):
        while True:
            if await check():
                return
            await trio.sleep(0.05)


async def _settled(probe: Probe, running: int, queued: int) -> None:
    """Wait until the server behind `probe` runs `running` handlers and has `queued` queued."""

    async def check() -> bool:
        snapshot = await trioserver.ray.statistics(probe)
        return (snapshot.running, snapshot.queued) == (running, queued)

    await _until(check)


async def test_calls_return_values_and_casts_are_queued_in_order() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        assert await probe.mark("a") == 1
        await probe.note("b")  # returns once queued in the actor: the call below comes after
        assert await probe.mark("c") == 3
        assert await probe.seen() == ["a", "b", "c"]


async def test_the_theater_sells_each_seat_once_to_50_concurrent_callers() -> None:
    async with trioserver.ray.open_server(Theater, 5) as theater:
        outcomes: list[str] = []

        async def buy(user: int) -> None:
            try:
                outcomes.append(await theater.reserve(f"A{user % 5}", f"u{user}", 0.01))
            except SeatTaken:
                outcomes.append("taken")

        async with trio.open_nursery() as nursery:
            for user in range(50):
                nursery.start_soon(buy, user)
        sales = await theater.sold()
    assert sorted(seat for seat, _ in sales) == [f"A{n}" for n in range(5)]  # once each
    assert sorted(outcomes) == [*(f"A{n}" for n in range(5)), *["taken"] * 45]


async def test_calls_wait_for_their_reply_without_a_thread_each() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        await probe.hold(0)  # Ray's own threads, started once
        before = threading.active_count()
        async with trio.open_nursery() as nursery:
            holding = trio.CancelScope()

            async def hold() -> None:
                with holding:
                    await probe.hold(30)

            nursery.start_soon(hold)
            await _settled(probe, running=1, queued=0)
            for n in range(50):
                nursery.start_soon(probe.mark, str(n))  # queued behind hold
            await _settled(probe, running=1, queued=50)
            during = threading.active_count()  # 51 callers wait for their replies now
            holding.cancel()
        assert len(await probe.seen()) == 50
    assert during <= before + 2, (before, during)


async def test_a_stopped_servers_callers_get_server_stopped() -> None:
    probe = await trioserver.ray.start(Probe, name="stopping")
    other = trioserver.ray.connect("stopping", Probe)
    async with trio.open_nursery() as nursery:
        outcome: list[BaseException] = []

        async def running() -> None:
            try:
                await probe.hold(30)
            except ServerStopped as exc:
                outcome.append(exc)

        nursery.start_soon(running)
        await trio.sleep(1.0)
        await trioserver.ray.stop(probe)
    assert len(outcome) == 1  # the running handler was cut, its caller told
    with pytest.raises(ServerStopped, match="stopped"):
        await probe.mark("late")
    with pytest.raises(ServerStopped, match="stopped"):  # another handle: the actor exited
        await other.mark("late")
    with pytest.raises(ServerStopped):  # Ray forgets the name (at once, or soon after)
        await trioserver.ray.connect("stopping", Probe).mark("late")
    await trioserver.ray.stop(probe)  # once is enough


async def test_wrong_arguments_raise_type_error_in_the_caller() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        with pytest.raises(TypeError):
            await probe.mark()  # type: ignore[call-arg]
        assert await probe.seen() == []


async def test_arguments_that_cannot_cross_raise_not_sendable() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        with pytest.raises(NotSendable, match=r"Probe\.mark: its arguments cannot be pickled"):
            await probe.mark(threading.Lock())  # nothing is sent
        with pytest.raises(NotSendable, match=r"Probe\.mark: its arguments could not be rebuilt"):
            await probe.mark(Local())
        assert await probe.seen() == []


async def test_a_call_that_returns_has_executed_a_checkpoint() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        with trio.testing.assert_checkpoints():
            await probe.mark("a")
        with trio.testing.assert_checkpoints():
            await probe.note("b")


async def test_statistics_come_from_the_actor() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        await probe.mark("a")
        await probe.note("b")
        snapshot = await trioserver.ray.statistics(probe)
        assert snapshot.handled >= 1
        assert snapshot.methods["mark"].service.count == 1
        with pytest.raises(TrioServerError, match=r"trioserver\.ray\.statistics"):
            trioserver.statistics(probe)


# -- time limits and callers who leave ------------------------------------------------------


async def test_the_callers_deadline_travels_and_bounds_the_handler() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        assert await probe.hold(0) == pytest.approx(30.0, abs=1.0)  # its own budget
        began = trio.current_time()
        with trio.move_on_after(1.0) as scope:
            await probe.hold(20)
        assert scope.cancelled_caught
        assert trio.current_time() - began < 1.5  # the caller left at its deadline
        left = 0.0
        with trio.move_on_after(2.0):
            left = await probe.hold(0)
        assert 0.2 < left <= 2.0  # the handler's deadline was the caller's, not its budget
        held = await probe.held()
    how, seconds = held[1]
    assert how == "cancelled"
    assert 0.2 < seconds < 2.5  # cut at the caller's deadline (1 s after it sent), in the actor


async def test_a_hung_handler_is_cut_at_its_budget_and_others_proceed() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        async with trio.open_nursery() as nursery:

            async def hang() -> None:
                with pytest.raises(
                    CallTimeout, match=r"Probe\.hang did not finish within its budget of 0\.5 s"
                ):
                    await probe.hang()

            began = trio.current_time()
            nursery.start_soon(hang)
            await _settled(probe, running=1, queued=0)
            assert await probe.mark("after") == 2  # it waited for the cut, then ran
            assert 0.5 < trio.current_time() - began < 5.0
        assert await probe.seen() == ["hang cut", "after"]
        assert (await trioserver.ray.statistics(probe)).timed_out == 1


async def test_a_call_refused_by_admission_ends_as_its_callers_deadline() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        await probe.hold(1.0)  # admission learns: hold takes 1 s
        began = trio.current_time()
        with trio.move_on_after(0.5) as scope:
            await probe.hold(1.0)  # cannot finish in 0.5 s: refused in the actor
        assert scope.cancelled_caught  # the block ended quietly, as at its deadline
        assert trio.current_time() - began < (0.45 if _private.ENABLED else 5.0)
        assert (await trioserver.ray.statistics(probe)).shed == 1


async def test_a_queued_call_whose_caller_left_never_runs() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe.hold, 3.0)
            await _settled(probe, running=1, queued=0)
            with trio.move_on_after(1.0) as scope:
                await probe.mark("withdrawn")  # queued behind hold; its caller leaves
            assert scope.cancelled_caught
        assert await probe.mark("after") == 1
        assert await probe.seen() == ["after"]  # the withdrawn call never ran
        snapshot = await trioserver.ray.statistics(probe)
        assert snapshot.withdrawn == 1


async def test_a_running_handler_is_cancelled_when_its_caller_leaves() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(probe.hold, 30)
                await _settled(probe, running=1, queued=0)
                await trio.sleep(0.5)
                scope.cancel()  # not a deadline: only `ray.cancel` reaches the actor
        began = trio.current_time()
        assert await probe.mark("next") == 1
        assert trio.current_time() - began < 5.0
        [(how, seconds)] = await probe.held()
        assert how == "cancelled"
        assert 0.5 <= seconds < 10.0
        assert (await trioserver.ray.statistics(probe)).cancelled == 1


async def test_a_call_cancelled_right_after_it_was_made_never_runs_to_the_end() -> None:
    """Ray may lose a cancellation that overtakes its call (made right after the call, it can
    reach the actor first): 4 of 40 such calls ran to the end before callers also withdrew
    their calls by token (`Host.withdraw`). Now each is refused as it comes, withdrawn while
    queued, or cut as it runs: no handler runs its 10 s."""
    async with trioserver.ray.open_server(Probe) as probe:
        for _ in range(40):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(probe.hold, 10.0)
                await trio.testing.wait_all_tasks_blocked()  # (sent: it waits for the reply)
                nursery.cancel_scope.cancel()
        assert await probe.mark("after") == 1  # (every hold that started has ended)
        windows = await probe.held()
        assert all(how == "cancelled" and seconds < 5.0 for how, seconds in windows), windows
        snapshot = await trioserver.ray.statistics(probe)
        # (handled: the mark and the read of `held`)
        assert (snapshot.running, snapshot.queued, snapshot.handled) == (0, 0, 2)


# -- errors ---------------------------------------------------------------------------------


async def test_handler_exceptions_reach_the_caller_as_themselves() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        with pytest.raises(SeatTaken) as seat:
            await probe.fail("seat")
        assert seat.value.args == ("B7",)
        assert any("raised in the Ray actor" in note for note in seat.value.__notes__)
        assert any('ray_servers.py", line' in note for note in seat.value.__notes__)
        with pytest.raises(ExceptionGroup) as group:  # passed through, not wrapped
            await probe.fail("group")
        assert [type(exc) for exc in group.value.exceptions] == [ValueError, KeyError]
        with pytest.raises(NotSendable, match=r"ray_servers\.Unrebuildable: B7: sold"):
            await probe.fail("unrebuildable")
        with pytest.raises(NotSendable, match=r"Probe\.lock.*pickle"):
            await probe.lock()
        assert await probe.mark("still serving") == 1


async def test_on_start_errors_come_out_of_start() -> None:
    with pytest.raises(LookupError, match="no seats"):
        await trioserver.ray.start(Probe, "no seats")


async def test_on_stop_errors_come_out_of_stop_unless_the_block_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(KeyError, match="till"):
        async with trioserver.ray.open_server(Failing, "stop") as failing:
            assert await failing.ping()
    with pytest.raises(SeatTaken):
        async with trioserver.ray.open_server(Failing, "stop"):
            raise SeatTaken("A1")
    assert "Failing.on_stop raised" in caplog.text


async def test_what_is_not_a_ray_server_is_refused() -> None:
    with pytest.raises(InvalidServerDefinition, match="not a server class"):
        await trioserver.ray.start(SeatTaken, "A1")  # type: ignore[type-var]
    with pytest.raises(InvalidServerDefinition, match="durable casts"):
        await trioserver.ray.start(Mailer)
    with pytest.raises(ValueError, match="at most once"):
        await trioserver.ray.start(Probe, max_task_retries=1)
    with pytest.raises(InvalidServerDefinition, match="not a server class"):
        trioserver.ray.connect("theater", SeatTaken)
    with pytest.raises(ServerStopped, match="no server named 'nobody'"):
        trioserver.ray.connect("nobody", Probe)
    with pytest.raises(TypeError, match="not a handle to a server in a Ray actor"):
        await trioserver.ray.stop(Probe())


# -- crashes and restarts --------------------------------------------------------------------


async def _first_after_restart(probe: Probe) -> int:
    """`probe.increment()` once its actor has restarted: a call sent while the actor restarts
    hears ServerCrashed (Ray cannot say whether it ran), so the caller tries again."""
    with trio.fail_after(30):
        while True:
            try:
                return await probe.increment()
            except ServerCrashed:
                await trio.sleep(0.1)


async def test_an_actor_that_dies_mid_call_gives_server_crashed_then_restarts_fresh() -> None:
    async with trioserver.ray.open_server(Probe, max_restarts=1) as probe:
        assert await probe.increment() == 1
        first = await probe.pid()
        with pytest.raises(ServerCrashed, match="may or may not have run"):
            await probe.exit_process()
        assert await _first_after_restart(probe) == 1  # a new object, in a new process
        assert await probe.pid() != first
        with pytest.raises(ServerCrashed):
            await probe.exit_process()  # no restart left
        with pytest.raises(ServerCrashed):
            await probe.increment()


async def test_a_server_that_crashes_restarts_its_actor_fresh() -> None:
    async with trioserver.ray.open_server(Probe, max_restarts=1) as probe:
        assert await probe.increment() == 1
        first = await probe.pid()
        with contextlib.suppress(ServerCrashed):  # (its acknowledgement may be lost with it)
            await probe.crash()  # a cast marked crash=True raises: the server crashes
        assert await _first_after_restart(probe) == 1
        assert await probe.pid() != first


async def test_an_actor_killed_mid_call_gives_server_crashed() -> None:
    async with trioserver.ray.open_server(Probe, max_restarts=1) as probe:
        assert await probe.increment() == 1
        async with trio.open_nursery() as nursery:
            crashed: list[ServerCrashed] = []

            async def held() -> None:
                with pytest.raises(ServerCrashed) as info:
                    await probe.hold(30)
                crashed.append(info.value)

            nursery.start_soon(held)
            await trio.sleep(1.0)
            ray.kill(trioserver.ray.actor(probe), no_restart=False)
        assert len(crashed) == 1
        assert await _first_after_restart(probe) == 1


# -- other processes --------------------------------------------------------------------------

SECOND_DRIVER = """
import sys
import ray, trio
import trioserver.ray
from tests.ray_servers import Probe

async def main():
    probe = trioserver.ray.connect("shared", Probe, namespace=sys.argv[2])
    print(await probe.mark("from the second process"), flush=True)
    with trio.move_on_after(1.0):
        await probe.hold(20)
    print(len(await probe.held()), flush=True)

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
trio.run(main)
ray.shutdown()
"""


async def test_a_stop_that_meets_a_restart_ends_the_actor_for_good() -> None:
    # Found by property_tests/test_ray_faults.py (invariant 8): a stop that met an actor Ray
    # was restarting (killed just before, or during the stop) returned, and the restarted
    # actor served calls through other handles, with a fresh server.
    probe = await trioserver.ray.start(Probe, max_restarts=1)
    other = pickle.loads(pickle.dumps(probe))  # a handle of its own, as another process has
    ray.kill(trioserver.ray.actor(probe), no_restart=False)  # Ray restarts it
    await trioserver.ray.stop(probe)
    with trio.move_on_after(3.0):  # (a restart takes about a second here)
        while True:
            with pytest.raises(ServerCrashed):
                await other.increment()
            await trio.sleep(0.1)


async def test_a_second_process_connects_by_name_and_calls(ray_cluster: str) -> None:
    async with trioserver.ray.open_server(Probe, name="shared") as probe:
        await probe.mark("from the first process")
        done = await trio.run_process(
            [sys.executable, "-c", SECOND_DRIVER, ray_cluster, NAMESPACE],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.split() == [b"2", b"1"]
        assert await probe.seen() == ["from the first process", "from the second process"]
        assert [how for how, _ in await probe.held()] == ["cancelled"]


async def test_a_handler_in_an_actor_calls_a_server_in_another_actor() -> None:
    async with (
        trioserver.ray.open_server(Probe) as probe,
        trioserver.ray.open_server(Relay) as relay,
    ):
        assert await relay.forward(probe, 0) == pytest.approx(20.0, abs=1.0)  # relay's budget
        with trio.move_on_after(1.0):  # the deadline travels on, through both actors
            await relay.forward(probe, 30)
        [_, (how, seconds)] = await probe.held()
        assert how == "cancelled"
        assert 0.5 < seconds < 1.5


async def test_a_start_cancelled_before_the_server_started_leaves_no_server() -> None:
    with trio.move_on_after(0.01):  # (an actor takes longer than this to start)
        await trioserver.ray.start(Probe, name="never")
    await trio.sleep(1.0)
    with pytest.raises((ServerStopped, ServerCrashed)):  # its actor was killed
        await trioserver.ray.connect("never", Probe).mark("a")


async def test_handles_pickle_to_the_same_actor() -> None:
    async with trioserver.ray.open_server(Probe) as probe:
        copy: Any = pickle.loads(pickle.dumps(probe))
        assert await copy.mark("via the copy") == 1
        assert repr(copy) == "<Probe in a Ray actor>"


# -- generated scenarios (property_tests/ray_faults.py), a few, on the real cluster ------------


@hypothesis.settings(
    max_examples=int(os.environ.get("TRIOSERVER_FAULT_EXAMPLES", "0")) // 50 or 3,
    deadline=None,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ray_faults.scenarios(in_process=False))
def test_generated_scenarios_keep_the_contract_on_a_real_cluster(
    scenario: ray_faults.Scenario,
) -> None:
    # The suite of property_tests/test_ray_faults.py plays Ray's part in one process, so as
    # to run hundreds of scenarios; these few run the same scenarios through real actors
    # (killed with ray.kill, restarted by Ray), checked against the same invariants.
    log = ray_faults.run_on_cluster(scenario)
    for event in set(ray_faults.events(log)):
        hypothesis.event(event)
    problems = ray_faults.check(log)
    assert not problems, "\n" + ray_faults.report(log, problems)
