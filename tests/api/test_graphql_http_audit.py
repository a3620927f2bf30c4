"""The GraphQL-over-HTTP audit of the npm package graphql-http, against the live server: no MUST may fail."""

from collections.abc import Callable

from tests.conftest import LiveServer
from tests.http_audit.runner import run_graphql_http_audit


def test_graphql_over_http_audit(
    live_server: LiveServer, record_property: Callable[[str, object], None]
) -> None:
    report = run_graphql_http_audit(f"{live_server.base_url}/graphql", live_server.staff_token)
    warnings = "\n".join(f"  SHOULD {r.id} {r.name}: {r.reason}" for r in report.should_warnings)
    summary = (
        f"graphql-http audit: {report.ok} ok, {report.warn} SHOULD warnings, {report.error} MUST failures"
    )
    print(f"\n{summary}\n{warnings}")
    record_property("graphql_http_should_warnings", report.warn)
    record_property("graphql_http_must_failures", report.error)
    failures = "\n".join(f"  MUST {r.id} {r.name}: {r.reason}" for r in report.must_failures)
    assert report.error == 0, f"{summary}\n{failures}"
