"""Nothing lost when the broker restarts: a run survives Redis killed and restarted mid-round.

The coordinator and the three sites run as separate processes, as in production, on a Redis
server of the test's own (so that it can be killed without touching anyone else's).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from portal.common import keys
from projects.models import Round, SiteHeartbeat, SiteRound, TrainingRun
from tests.conftest import needs, require_postgres, wait_for
from tests.projects.federation_setup import SITES, seed_medical
from tests.projects.test_federated_runs import _purge, _worker_env, finished, launch

pytestmark = [pytest.mark.worker, pytest.mark.postgres]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A throwaway Redis server that keeps nothing on disk, as the production one is set up."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.folder = folder
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis(port=self.port)
        wait_for(lambda: _pings(client), timeout=10, what="the private Redis")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # not up yet
        return False


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        needs("redis-server (Debian's redis-server package)")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def _env(redis_url: str) -> dict[str, str]:
    return {
        **_worker_env(),
        "CELERY_BROKER_URL": redis_url,
        "FEDERATION_RECONCILE_SECONDS": "0.5",
        "FEDERATION_RESEND_SECONDS": "2",
        "PORTAL_PUBLIC_KEY": keys.portal_public_text(),
    }


def _start(name: str, command: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen:
    logs.mkdir(parents=True, exist_ok=True)
    # The child keeps its own copy of the log's descriptor; ours closes at once.
    with (logs / f"{name}.log").open("a") as out:
        return subprocess.Popen(
            command, cwd=Path(settings.BASE_DIR), env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _site(slug: str, redis_url: str, logs: Path) -> subprocess.Popen:
    command = [
        *(sys.executable, "manage.py", "run_site_worker", "--institution", slug),
        *("--data-dir", str(Path(settings.SITE_DATA_ROOT) / slug), "--loglevel", "WARNING"),
    ]
    return _start(slug, command, _env(redis_url), logs)


def _processes(redis_url: str, logs: Path) -> list[subprocess.Popen]:
    coordinator = _start(
        "coordinator",
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--queues", "coordinator",
         "--pool", "solo", "--hostname", f"faults-{os.getpid()}@%h", "--loglevel", "WARNING"],
        _env(redis_url),
        logs,
    )  # fmt: skip
    return [coordinator, *(_site(slug, redis_url, logs) for slug in SITES)]


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def _every_site_heard() -> None:
    """Every site worker is up and heard by the coordinator (starting Python, Django and Celery
    takes a while on a busy machine)."""
    wait_for(
        lambda: SiteHeartbeat.objects.filter(institution__slug__in=SITES).count() == len(SITES),
        timeout=180,
        what="a heartbeat from each site",
    )


def _rounds_succeeded(run: TrainingRun, count: int) -> None:
    wait_for(
        lambda: run.round_set.filter(status="succeeded").count() >= count,
        timeout=120,
        what=f"{count} rounds",
    )


def _show_logs(logs: Path) -> None:
    """On failure, the processes' own words (the last lines of each log) go to the report."""
    for path in sorted(logs.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-40:]
        print(f"--- {path.name} ---", *lines, sep="\n")


def test_a_run_survives_redis_killed_and_restarted_mid_round(
    transactional_db, tmp_path, private_redis
):
    require_postgres()
    medical = seed_medical(tmp_path / "alliance")
    processes = _processes(private_redis.url, tmp_path / "logs")
    try:
        _every_site_heard()
        # The launch's own message goes to the test's usual broker; the coordinator's
        # reconciler starts the queued run from the database, as after a lost message.
        # A site that did not come back in time would be dropped at the deadline (30 s); the
        # round would not be lost (it closes with the quorum of 2 and the run goes on).
        run = launch(medical, rounds=8, round_deadline=30)
        _rounds_succeeded(run, 3)

        private_redis.kill()
        time.sleep(1.5)  # rounds keep trying to dispatch and answer while it is away
        private_redis.start()  # empty: every queued task and answer is gone
        run = finished(run, timeout=240)
    except AssertionError:
        _show_logs(tmp_path / "logs")
        raise
    finally:
        _stop(processes)
        _purge(["coordinator"])
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    rounds = list(run.round_set.order_by("number"))
    assert [r.status for r in rounds] == [Round.Status.SUCCEEDED] * 8  # no round lost
    # After the restart every site worker consumed again (even one whose acknowledgement failed
    # as Redis died) and contributed to every round: none was dropped at a deadline.
    assert [r.contributors for r in rounds] == [3] * 8


def test_a_site_worker_killed_mid_run_is_dropped_then_contributes_again_once_restarted(
    transactional_db, tmp_path, private_redis
):
    """SIGKILL, as a crash or a pulled plug would: the message it held is never acknowledged.
    Rounds go on at the deadline with the other two; the restarted worker is sent the open
    round's task again (the reconciler's resend) and takes part in every later round."""
    require_postgres()
    medical = seed_medical(tmp_path / "alliance")
    logs = tmp_path / "logs"
    processes = _processes(private_redis.url, logs)
    killed = SITES[0]
    try:
        _every_site_heard()
        run = launch(medical, rounds=6, round_deadline=8)
        _rounds_succeeded(run, 2)
        site = processes[1 + SITES.index(killed)]
        site.send_signal(signal.SIGKILL)
        site.wait(10)
        killed_at = run.round_set.filter(status="succeeded").count()
        wait_for(  # a round closes at its deadline without it
            lambda: run.round_set.filter(status="succeeded", contributors=2).exists(),
            timeout=120,
            what="a round without the killed site",
        )
        processes.append(_site(killed, private_redis.url, logs))
        run = finished(run, timeout=240)
    except AssertionError:
        _show_logs(logs)
        raise
    finally:
        _stop(processes)
        _purge(["coordinator"])
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    rounds = list(run.round_set.order_by("number"))
    assert [r.status for r in rounds] == [Round.Status.SUCCEEDED] * 6
    assert all(r.contributors == 3 for r in rounds[:killed_at])
    assert all(r.contributors >= 2 for r in rounds)
    # Dropped at the deadline while away, and back for the last round.
    assert SiteRound.objects.filter(
        round__run=run, institution__slug=killed, status=SiteRound.Status.DROPPED
    ).exists()
    assert rounds[-1].contributors == 3


def test_a_failed_acknowledgement_does_not_stop_a_worker_consuming(private_redis):
    """Redis dies as a task finishes: the acknowledgement fails, and the worker's channel must
    still ask for the next message once Redis is back (kombu's own kept the failed one in its
    prefetch window for good, and a worker with one message in flight never consumed again)."""
    from kombu import Connection, Exchange, Queue

    from portal.celery import app

    queue = Queue("faults.ack", Exchange("faults.ack"), routing_key="faults.ack")
    with Connection(private_redis.url) as connection:
        # The portal's transport, as every worker gets it from the broker URL.
        assert type(connection.transport).__module__ == "portal.common.broker"
        assert app.connection_for_read().transport_cls == "redis"
        channel = connection.channel()
        channel.basic_qos(0, 1, False)  # acks late, one message in flight: the workers' setting
        with connection.Producer(channel) as producer:
            producer.publish({"n": 1}, exchange=queue.exchange, routing_key="faults.ack",
                             declare=[queue])  # fmt: skip
        message = queue(channel).get(no_ack=False)
        assert message is not None and message.payload == {"n": 1}
        assert not channel.qos.can_consume()  # the window is full while the task runs

        private_redis.kill()
        with pytest.raises(Exception):  # noqa: B017 - whatever redis-py raises for a dead server
            message.ack()
        private_redis.start()

        assert channel.qos.can_consume(), "a failed acknowledgement kept the prefetch window full"
