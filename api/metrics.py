"""Prometheus metrics of the API process, in a registry of its own (one per app instance)."""

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _PoolCollector(Collector):
    def __init__(self, usage: Callable[[], tuple[int, int, int]]) -> None:
        self.usage = usage

    def collect(self) -> Iterator[Metric]:
        size, idle, maximum = self.usage()
        yield GaugeMetricFamily("yiyang_db_pool_connections", "Open database connections", value=size)
        yield GaugeMetricFamily("yiyang_db_pool_in_use", "Database connections in use", value=size - idle)
        yield GaugeMetricFamily("yiyang_db_pool_max", "Pool size limit", value=maximum)


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

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_latency.labels(route).observe(seconds)

    def observe_graphql(self, error_codes: list[str]) -> None:
        self.graphql_operations.labels("error" if error_codes else "ok").inc()
        for code in error_codes:
            self.graphql_errors.labels(code).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
