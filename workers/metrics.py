"""Worker metrics kept in Redis, read by the API's `/metrics` (api/metrics.py).

Workers are separate processes (and may run on other machines) while Prometheus scrapes the API: the
simplest design that stays correct with any number of both is to keep the counters where all of them
meet, in Redis, under the deployment's namespace (YIYANG_REDIS_NAMESPACE). Each job's end is one
pipelined round trip (HINCRBY counters, HSET its last success and duration); `/metrics` reads three
hashes and the queues' lengths. Counters only grow (Prometheus handles a reset of Redis as a restart).
"""

import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from workers.queues import namespace_from_environ, queue_names

__all__ = ["WorkerMetrics", "namespace_from_environ", "read", "record"]

OUTCOMES = ("completed", "failed", "retried", "dead_lettered", "tenant_failed")


def _keys(namespace: str) -> tuple[str, str, str]:
    prefix = f"{namespace}:workers"
    return f"{prefix}:jobs", f"{prefix}:last-success", f"{prefix}:durations"


async def record(
    redis: Redis, namespace: str, job: str, outcome: str, *, seconds: float | None = None, count: int = 1
) -> None:
    """Count `count` jobs of `job` ended with `outcome`; a completed one also sets its last success and
    adds its duration."""
    jobs, last_success, durations = _keys(namespace)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(jobs, f"{job}|{outcome}", count)
        if outcome == "completed":
            pipe.hset(last_success, job, repr(time.time()))
        if seconds is not None:
            pipe.hincrbyfloat(durations, f"{job}|sum", seconds)
            pipe.hincrby(durations, f"{job}|count", 1)
            pipe.hset(durations, f"{job}|last", repr(seconds))
        await pipe.execute()


@dataclass
class WorkerMetrics:
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)  # (job, outcome) -> count
    last_success: dict[str, float] = field(default_factory=dict)
    duration_sum: dict[str, float] = field(default_factory=dict)
    duration_count: dict[str, int] = field(default_factory=dict)
    last_duration: dict[str, float] = field(default_factory=dict)
    queue_depth: dict[str, int] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read(redis: Redis, namespace: str) -> WorkerMetrics:
    jobs, last_success, durations = _keys(namespace)
    queues = queue_names(namespace)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(jobs)
        pipe.hgetall(last_success)
        pipe.hgetall(durations)
        for queue in queues:
            pipe.zcard(queue)
        counted, succeeded, timed, *depths = await pipe.execute()
    found = WorkerMetrics()
    for key, value in counted.items():
        job, _, outcome = _text(key).rpartition("|")
        found.jobs[(job, outcome)] = int(value)
    for key, value in succeeded.items():
        found.last_success[_text(key)] = float(value)
    for key, value in timed.items():
        job, _, part = _text(key).rpartition("|")
        if part == "sum":
            found.duration_sum[job] = float(value)
        elif part == "count":
            found.duration_count[job] = int(value)
        elif part == "last":
            found.last_duration[job] = float(value)
    found.queue_depth = {queue: int(depth) for queue, depth in zip(queues, depths, strict=True)}
    return found
