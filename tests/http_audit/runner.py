"""Runs graphql-http's `auditServer` (node) against a live server and reads its verdicts."""

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent


@dataclass(frozen=True)
class AuditResult:
    id: str
    name: str
    status: str  # ok | warn (a SHOULD not met) | error (a MUST not met)
    reason: str | None


@dataclass(frozen=True)
class AuditReport:
    ok: int
    warn: int
    error: int
    results: list[AuditResult]

    @property
    def must_failures(self) -> list[AuditResult]:
        return [r for r in self.results if r.status == "error"]

    @property
    def should_warnings(self) -> list[AuditResult]:
        return [r for r in self.results if r.status == "warn"]


def run_graphql_http_audit(url: str, token: str | None, timeout: float = 120) -> AuditReport:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: the graphql-http audit needs Node 20")
    if not (HERE / "node_modules" / "graphql-http").exists():
        raise RuntimeError(f"run `npm ci` in {HERE} first (make test does)")
    completed = subprocess.run(
        [node, str(HERE / "audit.mjs"), url, *([token] if token else [])],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    data = json.loads(completed.stdout)
    return AuditReport(
        ok=data["ok"],
        warn=data["warn"],
        error=data["error"],
        results=[AuditResult(**result) for result in data["results"]],
    )
