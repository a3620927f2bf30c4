"""arq worker configuration: `arq workers.settings.WorkerSettings` (or `yiyang worker`)."""

import os
from typing import Any, ClassVar

from arq import cron
from arq.connections import RedisSettings

from tenants.db import close_database, open_database
from workers.audit_checkpoints import checkpoint_audit_logs
from workers.authorization_sweep import sweep_expired_authorizations
from workers.care_tasks import CRON_MINUTES, materialize_care_tasks
from workers.census import record_daily_census
from workers.notifications import deliver_notifications


async def startup(ctx: dict[str, Any]) -> None:
    await open_database(os.environ["DATABASE_URL"])


async def shutdown(ctx: dict[str, Any]) -> None:
    await close_database()


class WorkerSettings:
    functions: ClassVar = [
        record_daily_census,
        sweep_expired_authorizations,
        checkpoint_audit_logs,
        deliver_notifications,
        materialize_care_tasks,
    ]
    cron_jobs: ClassVar = [
        cron(record_daily_census, minute={5, 35}, unique=True, run_at_startup=True),
        cron(sweep_expired_authorizations, minute=17, unique=True),
        cron(checkpoint_audit_logs, minute=set(range(0, 60, 5)), unique=True),
        # unique: the job id is cron:deliver_notifications:<the minute>, so workers started together
        # enqueue each minute's run once (a fixed id would refuse every run while a result is kept).
        cron(deliver_notifications, second=0, unique=True),
        # Tasks of the care plans, and their escalation; the job id is per run minute (unique).
        cron(materialize_care_tasks, minute=set(CRON_MINUTES), unique=True, run_at_startup=True),
    ]
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    on_startup = startup
    on_shutdown = shutdown
    queue_name = "yiyang:short"
    max_jobs = 10
