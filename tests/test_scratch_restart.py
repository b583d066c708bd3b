import pickle
import time
import pytest
import trio
ray = pytest.importorskip("ray")
import trioserver.ray
from trioserver._ray_caller import wait_for
from .ray_servers import Probe

pytestmark = pytest.mark.usefixtures("ray_cluster")


async def test_stop_during_restart() -> None:
    probe = await trioserver.ray.start(Probe, max_restarts=1)
    actor = trioserver.ray.actor(probe)
    ray.kill(actor, no_restart=False)
    t = time.monotonic()
    for _ in range(20):
        try:
            r = await wait_for(actor.stop.remote())
            print("stop reply", r, time.monotonic() - t)
            break
        except Exception as e:
            print("stop:", type(e).__mro__[:3], str(e)[:300], time.monotonic() - t)
    try:
        await wait_for(actor.__ray_terminate__.remote())
    except Exception as e:
        print("terminate:", type(e).__name__, str(e)[:300])
    try:
        await wait_for(actor.ready.remote())
    except Exception as e:
        print("after:", type(e).__name__, str(e)[:300])
    ray.kill(actor, no_restart=True)
    ray.kill(actor, no_restart=True)
    try:
        await wait_for(actor.ready.remote())
    except Exception as e:
        print("after kill:", type(e).__name__, str(e)[:400])
