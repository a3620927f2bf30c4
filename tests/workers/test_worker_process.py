"""`yiyang worker` as a real process (`python -m api.cli worker --queue short`) on real Redis,
PostgreSQL and a real SMTP server that answers slowly, so that a sweep is caught in the middle:

- killed with SIGKILL while delivering, then restarted: every reminder is escalated once, every
  notification is in the inbox once, every e-mail was sent (a resend of a message the server had
  accepted just before the crash carries the same Message-ID: once in effect);
- stopped with SIGTERM while a sweep runs: the sweep finishes, nothing new is taken, the process
  exits 0.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobStatus

from api.settings import REPO_ROOT, Settings
from tests.care.notification_support import MAIL_FROM, MailRoom, smtp_server
from tests.conftest import World
from tests.workers.sweep_support import Overdue, escalated, inbox_of, outbox_states, overdue_institution
from workers.queues import LONG, SHORT, queue_name

MAIL_DELAY = 0.03  # seconds the SMTP server takes per message


class SlowMailRoom(MailRoom):
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        await asyncio.sleep(MAIL_DELAY)  # the server's own loop (a thread): the test's is not held up
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
async def mail_room() -> AsyncIterator[MailRoom]:
    async with smtp_server(SlowMailRoom) as room:
        yield room


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    try:
        yield pool
    finally:
        await pool.aclose()


@contextmanager
def worker_process(
    settings: Settings, room: MailRoom, log: Path, queues: tuple[str, ...] = ("--queue", "short")
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "YIYANG_ENV": "test",
        "YIYANG_REDIS_NAMESPACE": settings.redis_namespace,
        "YIYANG_SMTP_URL": f"smtp://127.0.0.1:{room.settings.port}",
        "YIYANG_MAIL_FROM": MAIL_FROM,
    }
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "worker", *queues],
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


async def until(condition: object, what: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await condition() if asyncio.iscoroutinefunction(condition) else condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


async def ready(redis: ArqRedis, queue: str, process: subprocess.Popen[bytes], *more: str) -> None:
    """The worker polls its queues: arq writes each one's health-check key on its first poll (call
    before the worker has had time to start: the keys are cleared first)."""
    keys = [f"{name}:health-check" for name in (queue, *more)]
    await redis.delete(*keys)

    async def polling() -> bool:
        assert process.poll() is None, "the worker exited"
        return await redis.exists(*keys) == len(keys)

    await until(polling, "the worker polls its queue", within=60)


def mails_to(setups: list[Overdue], room: MailRoom) -> int:
    """E-mails to the head nurses of the test's own institutions (the worker sweeps every institution of
    the test database: others' leftovers may be mailed too)."""
    return sum(len(room.to(setup.lead.login)) for setup in setups)


@dataclass(frozen=True)
class Sweep:
    """A sweep job of the test's own institutions on the short queue. Only the test's own: the test database
    holds every other test's too (pending e-mails among them), which would make the sweep's length, and so
    what SIGTERM and SIGKILL cut, depend on them."""

    setups: list[Overdue]
    queue: str
    job_id: str

    @property
    def total(self) -> int:
        return sum(len(setup.task_ids) for setup in self.setups)

    @property
    def ours(self) -> list[int]:
        return [setup.tenant.institution_id for setup in self.setups]


async def overdue_sweep(
    name: str, now: datetime, settings: Settings, *, institutions: int, tasks: int
) -> Sweep:
    setups = [await overdue_institution(name, now, residents=2, tasks=tasks) for _ in range(institutions)]
    return Sweep(setups, queue_name(SHORT, settings.redis_namespace), f"sweep:{uuid.uuid4().hex}")


async def started(sweep: Sweep, now: datetime, redis: ArqRedis, worker: subprocess.Popen[bytes]) -> Job:
    """The sweep enqueued once the worker polls its queue."""
    await ready(redis, sweep.queue, worker)
    job = await redis.enqueue_job(
        "sweep_due",
        now=now,
        batch=10,
        institution_ids=sweep.ours,
        _queue_name=sweep.queue,
        _job_id=sweep.job_id,
    )
    assert job is not None
    return job


async def assert_once(setups: list[Overdue], now: datetime, room: MailRoom) -> None:
    for setup in setups:
        assert await escalated(setup.tenant, setup.task_ids) == {task: now for task in setup.task_ids}
        assert await inbox_of(setup.tenant, setup.lead.id) == sorted(setup.task_ids)
        assert await outbox_states(setup.tenant) == {"delivered": len(setup.task_ids)}
        mails = room.to(setup.lead.login)
        identities = [mail["Message-ID"] for mail in mails]
        assert len(set(identities)) == len(setup.task_ids) and None not in identities


async def test_a_sweep_killed_with_sigkill_and_restarted_delivers_everything_once(
    app: object, world: World, settings: Settings, mail_room: MailRoom, redis: ArqRedis, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    sweep = await overdue_sweep("强杀", now, settings, institutions=3, tasks=40)
    setups, total, ours, queue, job_id = sweep.setups, sweep.total, sweep.ours, sweep.queue, sweep.job_id
    log = tmp_path / "worker.log"
    with worker_process(settings, mail_room, log) as first:
        job = await started(sweep, now, redis, first)
        await until(lambda: mails_to(setups, mail_room) >= 40, "deliveries have started")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    sent_before_the_crash = mails_to(setups, mail_room)
    assert sent_before_the_crash < total, "the sweep ended before the kill: nothing was tested"
    assert await job.status() is JobStatus.in_progress  # still queued, marked running by the dead worker

    # arq lets the job run again once its in-progress mark expires (the job's timeout + 10 s): sped up.
    await redis.delete(f"arq:in-progress:{job_id}")
    with worker_process(settings, mail_room, log) as second:
        await ready(redis, queue, second)
        outcome = await Job(job_id, redis, _queue_name=queue).result(timeout=120, poll_delay=0.2)
        # And the next minute's sweep, as the cron would enqueue it: nothing left to do.
        later = await redis.enqueue_job(
            "sweep_due",
            now=now + timedelta(minutes=1),
            institution_ids=ours,
            _queue_name=queue,
            _job_id=f"{job_id}:next",
        )
        assert later is not None
        await later.result(timeout=120, poll_delay=0.2)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=40) == 0, log.read_text()[-3000:]
    assert outcome["institutions"] >= len(setups)  # the rerun ran to its end
    await assert_once(setups, now, mail_room)
    # Resends are only of messages of the batches cut short (at most a batch per institution).
    assert mails_to(setups, mail_room) - total <= 3 * 10


async def test_sigterm_lets_the_running_sweep_finish_and_takes_nothing_new(
    app: object, world: World, settings: Settings, mail_room: MailRoom, redis: ArqRedis, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    sweep = await overdue_sweep("平滑", now, settings, institutions=2, tasks=30)
    setups, total, queue, job_id = sweep.setups, sweep.total, sweep.queue, sweep.job_id
    log = tmp_path / "worker.log"
    with worker_process(settings, mail_room, log) as worker:
        job = await started(sweep, now, redis, worker)
        await until(lambda: mails_to(setups, mail_room) >= 10, "deliveries have started")
        worker.send_signal(signal.SIGTERM)
        assert mails_to(setups, mail_room) < total, "the sweep ended before SIGTERM: nothing was tested"
        late = await redis.enqueue_job(
            "sweep_due", now=now, _queue_name=queue, _job_id=f"{job_id}:after-sigterm"
        )
        assert late is not None
        assert await asyncio.to_thread(worker.wait, 40) == 0, log.read_text()[-3000:]
    outcome = await job.result(timeout=5)  # finished by the stopping worker, not cut short
    assert outcome["notifications"] >= total
    assert mails_to(setups, mail_room) == total  # nothing cancelled half-way and sent again
    await assert_once(setups, now, mail_room)
    assert await late.status() is JobStatus.queued  # taken by no one: the next worker runs it
    await redis.zrem(queue, f"{job_id}:after-sigterm")


async def test_yiyang_worker_runs_both_queues_and_stops_cleanly(
    app: object, world: World, settings: Settings, mail_room: MailRoom, redis: ArqRedis, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with worker_process(settings, mail_room, log, queues=()) as worker:
        short, long = (queue_name(kind, settings.redis_namespace) for kind in (SHORT, LONG))
        await ready(redis, short, worker, long)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 40) == 0, log.read_text()[-3000:]
