"""The two arq queues and which job runs on which (docs/workers.md).

`yiyang:short` holds what must not wait behind anything: the sweep every minute (reminders, overdue tasks,
SLA breaches, then the deliveries it causes) and the deliveries themselves; its jobs take seconds.
`yiyang:long` holds what may take minutes: the census, audit checkpoints, materializing care tasks a week
ahead, expired authorizations. A slow census can then never hold up a reminder.

The queues live under the deployment's Redis namespace (YIYANG_REDIS_NAMESPACE, default `yiyang`), like
every other key of ours, so that two deployments (or two test runs) sharing a Redis never take each
other's jobs. Kept free of heavy imports: the API reads it to re-enqueue a dead letter and to report
queue depths.
"""

import os
from collections.abc import Mapping

SHORT, LONG = "short", "long"
KINDS = (SHORT, LONG)

JOB_QUEUES: dict[str, str] = {
    "sweep_due": SHORT,
    "deliver_notifications": SHORT,
    "record_daily_census": LONG,
    "sweep_expired_authorizations": LONG,
    "checkpoint_audit_logs": LONG,
    "materialize_care_tasks": LONG,
}


def namespace_from_environ(environ: Mapping[str, str] | None = None) -> str:
    return (environ if environ is not None else os.environ).get("YIYANG_REDIS_NAMESPACE", "yiyang")


def queue_name(kind: str, namespace: str | None = None) -> str:
    """`yiyang:short` or `yiyang:long` under the default namespace."""
    return f"{namespace or namespace_from_environ()}:{kind}"


def queue_of(job_name: str, namespace: str | None = None) -> str:
    return queue_name(JOB_QUEUES[job_name], namespace)


def queue_names(namespace: str | None = None) -> tuple[str, ...]:
    return tuple(queue_name(kind, namespace) for kind in KINDS)
