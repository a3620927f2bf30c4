"""arq worker configuration: one settings class per queue (workers/queues.py), both run in one process
by `yiyang worker` (workers/runner.py), or each alone: `arq workers.settings.ShortWorkerSettings`.

Cron jobs are `unique`: arq enqueues each run under the id `cron:<name>:<ms of the run's time>`, the same
in every worker, so workers started together enqueue a minute's run once (a fixed `job_id` would refuse
every run while a result is kept). Every job runs inside `workers.jobs.durable`: transient failures
retried with backoff, the rest dead-lettered, outcomes counted for /metrics.

Graceful shutdown: on SIGTERM or SIGINT a worker stops taking jobs and lets the running ones finish for
up to `job_completion_wait` seconds (arq's `handle_sig_wait_for_completion`); a job still running then is
cancelled and stays queued, to run again (every job is idempotent).
"""

import os
from typing import Any, ClassVar

from arq import cron
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.worker import Function

from tenants.db import close_database, open_database
from workers import metrics as worker_metrics
from workers.audit_checkpoints import checkpoint_audit_logs
from workers.authorization_sweep import sweep_expired_authorizations
from workers.care_tasks import CRON_MINUTES, materialize_care_tasks
from workers.census import record_daily_census
from workers.jobs import JobPolicy, durable
from workers.notifications import deliver_notifications, mailer_from_environ
from workers.queues import LONG, SHORT
from workers.queues import queue_name as named_queue
from workers.sweep import sweep_due

COMPLETION_WAIT_SECONDS = 20  # api/launcher.py waits a little longer before it kills a worker

SECONDS = JobPolicy(max_tries=5, backoff_base=2.0, backoff_cap=30.0, periodic=True, timeout=300)
MINUTES = JobPolicy(max_tries=4, backoff_base=10.0, backoff_cap=300.0, periodic=True, timeout=1800)

SWEEP = durable(sweep_due, SECONDS)
DELIVER = durable(deliver_notifications, SECONDS)
CENSUS = durable(record_daily_census, MINUTES)
AUTHORIZATIONS = durable(sweep_expired_authorizations, MINUTES)
CHECKPOINTS = durable(checkpoint_audit_logs, MINUTES)
MATERIALIZE = durable(materialize_care_tasks, MINUTES)


def periodic(job: Function, **when: Any) -> CronJob:
    """A cron of `job` with its retries and timeout (a cron's own default is a single try)."""
    return cron(
        job.coroutine,
        name=f"cron:{job.name}",
        unique=True,
        max_tries=job.max_tries,
        timeout=job.timeout_s,
        **when,
    )


def redis_settings() -> RedisSettings:
    return RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


async def open_resources(ctx: dict[str, Any]) -> None:
    """What every job finds in its ctx; opened once per process."""
    from care.webhooks import HttpxSender, production_environment

    ctx["mailer"] = mailer_from_environ()
    # In production, endpoints whose names resolve inside our network are refused (care/webhooks.py).
    ctx["webhook_sender"] = HttpxSender(public_only=production_environment())
    ctx["metrics_namespace"] = worker_metrics.namespace_from_environ()


async def close_resources(ctx: dict[str, Any]) -> None:
    sender = ctx.pop("webhook_sender", None)
    if sender is not None:
        await sender.aclose()


async def startup(ctx: dict[str, Any]) -> None:
    await open_database(os.environ["DATABASE_URL"])
    await open_resources(ctx)


async def shutdown(ctx: dict[str, Any]) -> None:
    await close_resources(ctx)
    await close_database()


class ShortWorkerSettings:
    """Seconds: the sweep every minute and the deliveries."""

    queue_name = named_queue(SHORT)
    functions: ClassVar = [SWEEP, DELIVER]
    cron_jobs: ClassVar = [periodic(SWEEP, second=0)]
    redis_settings = redis_settings()
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = 4
    job_timeout = 300
    job_completion_wait = COMPLETION_WAIT_SECONDS
    health_check_interval = 60


class LongWorkerSettings:
    """Minutes: census, audit checkpoints, materializing care tasks, expired authorizations."""

    queue_name = named_queue(LONG)
    functions: ClassVar = [CENSUS, AUTHORIZATIONS, CHECKPOINTS, MATERIALIZE]
    cron_jobs: ClassVar = [
        periodic(CENSUS, minute={5, 35}, run_at_startup=True),
        periodic(AUTHORIZATIONS, minute=17),
        periodic(CHECKPOINTS, minute=set(range(0, 60, 5))),
        # Tasks of the care plans, a week ahead; escalation is the sweep's, every minute.
        periodic(MATERIALIZE, minute=set(CRON_MINUTES), run_at_startup=True),
    ]
    redis_settings = redis_settings()
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = 2
    job_timeout = 1800
    job_completion_wait = COMPLETION_WAIT_SECONDS
    health_check_interval = 60


WORKER_SETTINGS = {SHORT: ShortWorkerSettings, LONG: LongWorkerSettings}
