"""Prometheus metrics of the API process, in a registry of its own (one per app instance), and the
workers' figures, which they keep in Redis (workers/metrics.py)."""

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from workers.metrics import WorkerMetrics
from workers.metrics import read as read_worker_metrics

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _PoolCollector(Collector):
    def __init__(self, usage: Callable[[], tuple[int, int, int]]) -> None:
        self.usage = usage

    def collect(self) -> Iterator[Metric]:
        size, idle, maximum = self.usage()
        yield GaugeMetricFamily("yiyang_db_pool_connections", "Open database connections", value=size)
        yield GaugeMetricFamily("yiyang_db_pool_in_use", "Database connections in use", value=size - idle)
        yield GaugeMetricFamily("yiyang_db_pool_max", "Pool size limit", value=maximum)


class _WorkerCollector(Collector):
    """The workers' counters (workers/metrics.py), read from Redis just before each exposition."""

    def __init__(self) -> None:
        self.snapshot: WorkerMetrics | None = None

    def collect(self) -> Iterator[Metric]:
        found = self.snapshot
        if found is None:
            return
        jobs = CounterMetricFamily(
            "yiyang_worker_jobs", "Background jobs ended, by outcome", labels=["job", "outcome"]
        )
        for (job, outcome), count in sorted(found.jobs.items()):
            jobs.add_metric([job, outcome], count)
        yield jobs
        last = GaugeMetricFamily(
            "yiyang_worker_last_success_timestamp_seconds", "When a job last completed", labels=["job"]
        )
        for job, at in sorted(found.last_success.items()):
            last.add_metric([job], at)
        yield last
        took = GaugeMetricFamily(
            "yiyang_worker_last_duration_seconds", "How long a job's last completed run took", labels=["job"]
        )
        for job, seconds in sorted(found.last_duration.items()):
            took.add_metric([job], seconds)
        yield took
        durations = SummaryMetricFamily(
            "yiyang_worker_job_duration_seconds", "Duration of completed jobs", labels=["job"]
        )
        for job, total in sorted(found.duration_sum.items()):
            durations.add_metric([job], count_value=found.duration_count.get(job, 0), sum_value=total)
        yield durations
        depth = GaugeMetricFamily("yiyang_worker_queue_depth", "Jobs waiting in a queue", labels=["queue"])
        for queue, count in sorted(found.queue_depth.items()):
            depth.add_metric([queue], count)
        yield depth


class Metrics:
    def __init__(self, pool_usage: Callable[[], tuple[int, int, int]]) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "yiyang_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.http_latency = Histogram(
            "yiyang_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.graphql_operations = Counter(
            "yiyang_graphql_operations", "GraphQL operations executed", ["outcome"], registry=self.registry
        )
        self.graphql_errors = Counter(
            "yiyang_graphql_errors", "GraphQL errors by extensions.code", ["code"], registry=self.registry
        )
        self.registry.register(_PoolCollector(pool_usage))
        self.workers = _WorkerCollector()
        self.registry.register(self.workers)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_latency.labels(route).observe(seconds)

    def observe_graphql(self, error_codes: list[str]) -> None:
        self.graphql_operations.labels("error" if error_codes else "ok").inc()
        for code in error_codes:
            self.graphql_errors.labels(code).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def exposition_with_workers(self, redis: Redis, namespace: str) -> bytes:
        """`exposition` with the workers' figures read from Redis first (left out if Redis fails)."""
        try:
            snapshot: WorkerMetrics | None = await read_worker_metrics(redis, namespace)
        except RedisError:
            log.warning("worker metrics: Redis could not be read", exc_info=True)
            snapshot = None
        self.workers.snapshot = snapshot  # no await from here on: this exposition's own snapshot
        return generate_latest(self.registry)
