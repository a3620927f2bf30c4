"""`yiyang bench tenancy`: schema-per-institution at scale, measured end to end on this machine.

In a scratch database created for the run (and dropped afterwards) it

1. provisions N institutions one by one through `tenants.registry.provision_institution` (timing each),
2. fills every tenant schema with residents, their identity sealed (bench/search.py's `fill`),
3. applies one additive migration to every schema through `tenants.migrate.migrate_all`, then times a
   second, no-op run (in-process, and the `yiyang migrate` command end to end),
4. starts the API as real uvicorn processes, warms it with one request per institution, reads its RSS,
5. times `residents(first: 20)` at C concurrent clients across random institutions, each request with its
   institution's staff token, and the same SQL sent through bare asyncpg (as many connections in all as
   the API processes hold together), in interleaved rounds so that both paths meet the same machine,
6. times the same requests once more through httpx, and both paths with a single client,

and writes the figures, with the machine they were measured on, into a section of docs/benchmarks.md.
"""

import argparse
import asyncio
import base64
import contextlib
import importlib.metadata
import json
import os
import platform
import random
import re
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg
import httpx
import psutil

from api.services import scratch_database

if TYPE_CHECKING:
    from compliance.identity.keys import ActiveKey
from api.settings import REPO_ROOT

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SECTION_BEGIN = "<!-- bench:tenancy:begin -->"
SECTION_END = "<!-- bench:tenancy:end -->"
INTRO = """# Benchmarks

Measured figures of Yiyang, each section with the machine it was measured on. Sections between
`<!-- bench:… -->` markers are written by the benchmark commands; re-running one replaces its section.

## Reproducing

```sh
make bench                                  # = .venv/bin/yiyang bench tenancy
.venv/bin/yiyang bench tenancy --help       # options: --institutions, --requests, --rounds, …
.venv/bin/yiyang bench tenancy --institutions 100 --output /tmp/bench.md   # a quick try
```

The tenancy benchmark needs a PostgreSQL server it may create databases on (`--database-url`, default
`$DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`) and a Redis (`--redis-url`, default
`$REDIS_URL`, else `redis://127.0.0.1:6379/0`). It works in a scratch database `yiyang_bench_<hex>`
that it drops at the end, starts the API as `yiyang serve` does (`--api-workers` uvicorn processes, 2 by
default), and takes about two minutes at 1,500 institutions. The client, the API and PostgreSQL share
the machine: close other load first.
"""

GOAL_PROVISION_S = 1.0
GOAL_MIGRATE_ALL_S = 30.0
GOAL_NOOP_MIGRATE_S = 5.0
GOAL_RSS_MB = 400.0
GOAL_LATENCY_RATIO = 3.0

RESIDENTS_QUERY = """query BenchResidents {
  residents(first: 20) {
    edges { cursor node { id name gender birthDate building room bed careLevel admissionDate status } }
    pageInfo { hasNextPage endCursor }
  }
}"""

BARE_APPLICATION = "yiyang-bench-bare"  # application_name of the bare asyncpg pool's connections
REGIONS = (("bench-east", "华东基准区"), ("bench-north", "华北基准区"), ("bench-west", "西部基准区"))
CHAINS = 10


# ----------------------------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Run:
    """One load run: per-request latencies (s), wall time (s), failures, CPU seconds spent per side."""

    latencies: list[float]
    wall: float
    failures: int = 0
    failure_samples: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.latencies)

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.latencies) if self.latencies else float("nan")

    @property
    def throughput(self) -> float:
        return self.count / self.wall if self.wall else float("nan")

    def cpu_per_request(self, side: str) -> float | None:
        """CPU seconds per request spent by `side` ("client", "api", "postgres"), if it was measured."""
        return self.cpu[side] / self.count if side in self.cpu and self.count else None


def pooled(runs: Sequence[Run]) -> Run:
    """Several runs of one path as one: their latencies, wall times, failures and CPU seconds added up."""
    sides = {side for run in runs for side in run.cpu}
    return Run(
        latencies=[latency for run in runs for latency in run.latencies],
        wall=sum(run.wall for run in runs),
        failures=sum(run.failures for run in runs),
        failure_samples=[sample for run in runs for sample in run.failure_samples][:3],
        cpu={side: sum(run.cpu.get(side, 0.0) for run in runs) for side in sides},
    )


@dataclass
class Round:
    """One interleaved round: the same chunk of requests through GraphQL and through bare asyncpg."""

    graphql_first: bool
    graphql: Run
    bare: Run

    @property
    def ratio(self) -> float:
        """GraphQL p50 over bare asyncpg p50 in this round."""
        return self.graphql.p(50) / self.bare.p(50)


@dataclass
class Results:
    args: argparse.Namespace
    started: datetime
    machine: dict[str, str] = field(default_factory=dict)
    provision: list[float] = field(default_factory=list)
    provision_total: float = 0.0
    fill_seconds: float = 0.0
    residents_total: int = 0
    migrate_all_seconds: float = 0.0
    migrate_all_schemas: int = 0
    noop_seconds: float = 0.0
    noop_cli_seconds: float = 0.0
    rss: dict[str, float] = field(default_factory=dict)  # MB at named moments
    backend_memory: dict[str, float] = field(default_factory=dict)
    api_pool_size: int = 0  # connections per API process; the bare pool holds as many as all of them
    warmup: Run | None = None
    rounds: list[Round] = field(default_factory=list)
    graphql_httpx: Run | None = None
    graphql_serial: Run | None = None
    bare_serial: Run | None = None
    select_sql: str = ""
    profile: "Profile | None" = None
    finished: datetime | None = None

    @property
    def graphql(self) -> Run | None:
        """The GraphQL path (minimal HTTP client) at C clients, all rounds pooled."""
        return pooled([r.graphql for r in self.rounds]) if self.rounds else None

    @property
    def bare(self) -> Run | None:
        """The bare asyncpg path at C clients, all rounds pooled."""
        return pooled([r.bare for r in self.rounds]) if self.rounds else None

    def runs(self) -> list[Run]:
        """Every run of requests made, the warm-up included."""
        measured = (self.warmup, self.graphql_httpx, self.graphql_serial, self.bare_serial)
        return [*(run for r in self.rounds for run in (r.graphql, r.bare)), *(r for r in measured if r)]


# ------------------------------------------------------------------------------------------------ machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def code_version() -> str:
    """The commit measured, and whether tracked files differed from it."""
    try:
        commit = subprocess.run(
            ["git", "log", "-1", "--format=%h %cI %s"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    files = [line[3:] for line in changed if line.strip()]
    dirty = f"; uncommitted changes in {', '.join(files[:5])}" if files else "; no uncommitted changes"
    return f"commit {commit}{dirty}".replace("|", "\\|")


def machine_table(machine: dict[str, str]) -> list[str]:
    """The machine a benchmark ran on, as the Markdown table every section of docs/benchmarks.md ends with."""
    return ["| machine | |", "| --- | --- |", *(f"| {key} | {value} |" for key, value in machine.items())]


async def describe_machine(admin: asyncpg.Connection, dsn: str) -> dict[str, str]:
    settings = {
        row["name"]: row["setting"] + (row["unit"] or "")
        for row in await admin.fetch(
            """SELECT name, setting, unit FROM pg_settings
               WHERE name IN ('max_connections', 'shared_buffers', 'fsync', 'synchronous_commit', 'jit')"""
        )
    }
    shared_buffers = settings.get("shared_buffers", "?")
    if shared_buffers.endswith("8kB") and shared_buffers[:-3].isdigit():
        shared_buffers = f"{int(shared_buffers[:-3]) * 8 // 1024} MB"
    others = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    host = urlsplit(dsn).hostname or "?"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    physical = psutil.cpu_count(logical=False)
    return {
        "CPU": _cpu_model(),
        "Cores": f"{os.cpu_count()} logical ({physical or '?'} physical); "
        f"{len(os.sched_getaffinity(0))} usable by this process",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "PostgreSQL": f"{await admin.fetchval('SHOW server_version')} on {host} (same machine: "
        f"{'yes' if host in {'127.0.0.1', 'localhost', '::1'} else 'no'}); shared_buffers {shared_buffers}, "
        f"max_connections {settings.get('max_connections', '?')}, fsync {settings.get('fsync', '?')}, "
        f"synchronous_commit {settings.get('synchronous_commit', '?')}, jit {settings.get('jit', '?')}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "Code": await asyncio.to_thread(code_version),
        "Libraries": ", ".join(
            f"{name} {_version(name)}"
            for name in (
                "strawberry-graphql",
                "graphql-core",
                "starlette",
                "uvicorn",
                "uvloop",
                "tortoise-orm",
                "asyncpg",
                "httpx",
            )
        ),
        "Load at start": f"load average {load}; {others} other client session(s) on the PostgreSQL server",
    }


def machine_load_since(before: object) -> str:
    """How busy the whole machine was since `before` (psutil.cpu_times()): others' load shows here."""
    after = psutil.cpu_times()
    spent = {name: getattr(after, name) - getattr(before, name) for name in after._fields}
    total = sum(spent.values()) or 1.0
    busy = 1 - (spent.get("idle", 0.0) + spent.get("iowait", 0.0)) / total
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"all cores {busy:.0%} busy on average, CPU steal {spent.get('steal', 0.0) / total:.1%}; "
        f"load average at the end {load}"
    )


# ------------------------------------------------------------------------------------------------- set-up


@dataclass(frozen=True)
class Tenant:
    institution_id: int
    schema_name: str


# Sends one request for the tenant's page of residents; returns what went wrong, or None.
Call = Callable[[Tenant], Awaitable[str | None]]


async def provision_all(count: int, results: Results) -> list[Tenant]:
    """Provision `count` institutions one after the other, as an operator onboarding them would."""
    from tenants.registry import (
        NewInstitution,
        get_or_create_chain,
        get_or_create_region,
        provision_institution,
    )

    for code, name in REGIONS:
        await get_or_create_region(code, name)
    chains = [(await get_or_create_chain(f"基准连锁{k:02d}")).name for k in range(CHAINS)]
    tenants: list[Tenant] = []
    started = time.perf_counter()
    for number in range(count):
        spec = NewInstitution(
            name=f"基准养老院{number:05d}",
            region_code=REGIONS[number % len(REGIONS)][0],
            chain_name=chains[number % CHAINS] if number % 3 else None,
            bed_capacity=120,
        )
        began = time.perf_counter()
        institution = await provision_institution(spec)
        results.provision.append(time.perf_counter() - began)
        tenants.append(Tenant(institution.id, institution.schema_name))
        if (number + 1) % 100 == 0 or number + 1 == count:
            log(f"provisioned {number + 1}/{count} (last: {results.provision[-1] * 1000:.0f} ms)")
    results.provision_total = time.perf_counter() - started
    return tenants


def page_select_sql(limit: int) -> str:
    """The SELECT that care.residents.list_residents sends for `residents(first: 20)`; asyncpg prepares it
    with the page size as its one parameter."""
    from care.residents import ResidentFilter, resident_page_sql

    sql, parameters = resident_page_sql(ResidentFilter(), after_id=None, limit=limit)
    assert parameters == [limit]
    return sql


async def fill_residents(
    database_url: str, tenants: Sequence[Tenant], per_institution: int, results: Results, root_key: bytes
) -> None:
    """Residents sealed as the application writes them (identity is encrypted: bench/search.py's `fill`,
    ids first, an institution's data keys in one INSERT, sealed rows in bulk), one unit of work each."""
    from bench.search import fill, people
    from compliance.encryption import RootKeyring
    from tenants.context import TenantRef
    from tenants.db import asyncpg_dsn, close_database, open_database
    from tenants.unit_of_work import run_in_tenant

    population = people(per_institution, seed=len(tenants))
    keyring = RootKeyring(root_key)
    started = time.perf_counter()
    await open_database(database_url)
    try:
        for tenant in tenants:
            await run_in_tenant(
                TenantRef(tenant.institution_id, tenant.schema_name), lambda: fill(population, keyring)
            )
    finally:
        await close_database()
    results.fill_seconds = time.perf_counter() - started
    results.residents_total = per_institution * len(tenants)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute("ANALYZE")  # planner statistics, as autovacuum would leave them (not timed)
    finally:
        await conn.close()


async def bounded_gather(jobs: Sequence[Callable[[], Awaitable[object]]], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


# ------------------------------------------------------------------------------------------------ migrate


async def bench_migrations(database_url: str, expected_schemas: int, results: Results) -> None:
    from tenants.migrate import Migration, MigrationSet, migrate_all, tenant_migrations

    real = tenant_migrations()
    extra = Migration(real.latest + 1, "bench_note", "ALTER TABLE resident ADD COLUMN bench_note text;\n")
    with_extra = MigrationSet((*real.migrations, extra))

    started = time.perf_counter()
    report = await migrate_all(database_url, tenant=with_extra)
    results.migrate_all_seconds = time.perf_counter() - started
    results.migrate_all_schemas = report.schemas_migrated
    if report.schemas_migrated != expected_schemas or report.migrations_applied != expected_schemas:
        raise RuntimeError(f"additive migration reached {report.schemas_migrated}/{expected_schemas} schemas")
    log(f"additive migration on {report.schemas_migrated} schemas: {results.migrate_all_seconds:.2f} s")

    started = time.perf_counter()
    report = await migrate_all(database_url, tenant=with_extra)
    results.noop_seconds = time.perf_counter() - started
    if report.migrations_applied:
        raise RuntimeError("the second migration run was expected to apply nothing")
    log(f"no-op migrate_all: {results.noop_seconds * 1000:.0f} ms")

    # The operator's command, end to end (interpreter start and imports included). Its migration set is
    # the real one, one version behind the schemas, so it too has nothing to do.
    started = time.perf_counter()
    completed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "migrate"],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
    )
    results.noop_cli_seconds = time.perf_counter() - started
    if completed.returncode != 0 or "migrations applied: 0" not in completed.stdout:
        raise RuntimeError(f"`yiyang migrate` failed: {completed.stdout}{completed.stderr}")
    log(f"no-op `yiyang migrate`: {results.noop_cli_seconds:.2f} s")


# ---------------------------------------------------------------------------------------------------- API


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    signing_key: "ActiveKey"
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def processes(self) -> list[psutil.Process]:
        """`yiyang serve` and its API processes."""
        parent = psutil.Process(self.pid)
        return [parent, *parent.children(recursive=True)]

    def rss_mb(self) -> float:
        """Resident set size of the API, summed over its processes."""
        return sum(process.memory_info().rss for process in self.processes()) / 2**20

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total


@contextlib.contextmanager
def api_server(
    database_url: str,
    redis_url: str,
    pool_size: int,
    keys: "BenchKeys",
    workers: int = 1,
    extra_env: Sequence[str] = (),
) -> Iterator[Server]:
    """The real app as `yiyang serve` runs it, in processes of its own (production mode), with a root
    key of this run's own and the signing key sealed under it (to sign the benchmark's tokens)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "YIYANG_ROOT_KEY": base64.b64encode(keys.root_key).decode(),
        "YIYANG_ISSUER": BENCH_ISSUER,
        "YIYANG_ENV": "production",
        "YIYANG_DB_POOL_SIZE": str(pool_size),
        "YIYANG_LOG_LEVEL": "warning",
        **dict(item.split("=", 1) for item in extra_env),
    }
    log_file = tempfile.NamedTemporaryFile(prefix="yiyang-bench-api-", suffix=".log", delete=False)
    # What `yiyang run` runs: one uvicorn process per worker, each on a SO_REUSEPORT socket (api/serve.py).
    command = [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", keys.signing_key, Path(log_file.name))
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API exited with {process.returncode}:\n{tail(server.log_path)}")
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not become healthy within 60 s:\n{tail(server.log_path)}")
            time.sleep(0.2)
        log(f"API pid {process.pid} on {server.base_url} ({shlex.join(command[2:])})")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class BenchKeys:
    root_key: bytes
    signing_key: "ActiveKey"


async def bench_keys(database_url: str, root_key: bytes) -> BenchKeys:
    """The root key of this run, and a signing key sealed under it in the scratch database."""
    from compliance.identity.keys import SigningKeys
    from tenants.db import close_database, open_database

    await open_database(database_url)
    try:
        return BenchKeys(root_key, await SigningKeys(root_key).signing_key())
    finally:
        await close_database()


BENCH_ISSUER = "https://bench.yiyang.test"  # production mode wants https; nothing connects to it


def staff_tokens(signing_key: "ActiveKey", tenants: Sequence[Tenant]) -> dict[int, dict[str, str]]:
    """A nurse's access token per institution, as the authorization server would issue it (10 minutes:
    the measured phases take a few; an expired token would show as failed requests)."""
    from compliance.identity.access_tokens import AccessTokenClaims, encode_access_token
    from compliance.principals import Principal, PrincipalKind, StaffRole

    headers: dict[int, dict[str, str]] = {}
    for tenant in tenants:
        principal = Principal(
            subject=f"account:{tenant.institution_id}",
            kind=PrincipalKind.STAFF,
            institution_id=tenant.institution_id,
            roles=frozenset({StaffRole.NURSE}),
        )
        claims = AccessTokenClaims.for_principal(
            principal, issuer=BENCH_ISSUER, client_id="yiyang-bench", lifetime_seconds=600
        )
        headers[tenant.institution_id] = {
            "authorization": f"Bearer {encode_access_token(claims, signing_key)}",
            "content-type": "application/json",
        }
    return headers


async def drive(jobs: Sequence[Tenant], concurrency: int, call: Call) -> Run:
    """`concurrency` closed-loop clients working through `jobs` in order; `call` returns an error or None."""
    cursor = iter(jobs)
    latencies: list[float] = []
    failures: list[str] = []

    async def client() -> None:
        for tenant in cursor:
            began = time.perf_counter()
            try:
                problem = await call(tenant)
            except Exception as exc:  # a failed request is counted, reported and does not stop the run
                problem = f"{type(exc).__name__}: {exc}"
            latencies.append(time.perf_counter() - began)
            if problem is not None:
                failures.append(f"institution {tenant.institution_id}: {problem}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return Run(latencies, wall, len(failures), failures[:3])


def graphql_call(
    http: httpx.AsyncClient, headers: dict[int, dict[str, str]], expected: int, check_body: bool
) -> Call:
    body = json.dumps({"query": RESIDENTS_QUERY}).encode()

    async def call(tenant: Tenant) -> str | None:
        response = await http.post("/graphql", content=body, headers=headers[tenant.institution_id])
        if response.status_code != 200 or b'"errors"' in response.content:
            return f"HTTP {response.status_code}: {response.text[:300]}"
        if check_body:
            edges = response.json()["data"]["residents"]["edges"]
            if len(edges) != expected:
                return f"{len(edges)} residents instead of {expected}"
        return None

    return call


class RawHttpClients:
    """Keep-alive HTTP/1.1 connections driven with prebuilt request bytes: the least client CPU per request
    Python can spend, to tell the API's share of the latency from the load generator's (httpx)."""

    def __init__(self, base_url: str, count: int) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.count = count
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def __aenter__(self) -> "RawHttpClients":
        for _ in range(self.count):
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()

    def call(self, headers: dict[int, dict[str, str]], expected: int) -> Call:
        body = json.dumps({"query": RESIDENTS_QUERY}).encode()
        requests = {
            institution: (
                f"POST /graphql HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
                + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
                + f"content-length: {len(body)}\r\n\r\n"
            ).encode()
            + body
            for institution, fields in headers.items()
        }

        async def call(tenant: Tenant) -> str | None:
            reader, writer = await self.idle.get()
            try:
                writer.write(requests[tenant.institution_id])
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if length is None:
                    raise RuntimeError("response without content-length")
                content = await reader.readexactly(int(length.group(1)))
            except BaseException:
                writer.close()
                self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))
                raise
            self.idle.put_nowait((reader, writer))
            if not head.startswith(b"HTTP/1.1 200") or b'"errors"' in content:
                return f"{head[:15]!r}: {content[:300]!r}"
            return None if content.count(b'"cursor"') == expected else "unexpected page size"

        return call


def bare_call(pool: asyncpg.Pool, select_sql: str, limit: int, expected: int) -> Call:
    from tenants.schema_names import tenant_search_path

    parameterized = "$1" in select_sql

    async def call(tenant: Tenant) -> str | None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL search_path TO {tenant_search_path(tenant.schema_name)}")
            rows = await (conn.fetch(select_sql, limit) if parameterized else conn.fetch(select_sql))
        return None if len(rows) == expected else f"{len(rows)} rows instead of {expected}"

    return call


async def backend_pids(admin: asyncpg.Connection, database: str, application: str) -> list[int]:
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2", database, application
    )
    return [row["pid"] for row in rows]


def processes_cpu(pids: Sequence[int]) -> dict[int, float]:
    seen: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            seen[pid] = times.user + times.system
    return seen


def own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


@dataclass(frozen=True)
class ServerCpu:
    """CPU seconds spent so far by the API's processes (if the path goes through the API) and by each
    PostgreSQL backend of the path's pool."""

    api: float | None
    postgres: dict[int, float]

    def since(self, before: "ServerCpu") -> dict[str, float]:
        """CPU seconds spent per side between `before` and this reading. A backend that appeared in
        between counts from zero; one that ended in between is not counted."""
        spent = {
            "postgres": sum(seconds - before.postgres.get(pid, 0.0) for pid, seconds in self.postgres.items())
        }
        if self.api is not None and before.api is not None:
            spent["api"] = self.api - before.api
        return spent


@dataclass(frozen=True)
class CpuMeter:
    """Reads the CPU of the server side of one path: the API's processes (if the path goes through the
    API) and the PostgreSQL backends whose application_name is the path's pool's."""

    admin: asyncpg.Connection
    database: str
    application: str
    server: Server | None = None

    async def read(self) -> ServerCpu:
        pids = await backend_pids(self.admin, self.database, self.application)
        return ServerCpu(api=self.server.cpu_seconds() if self.server else None, postgres=processes_cpu(pids))


@dataclass(frozen=True)
class Target:
    """One way of serving `residents(first: 20)`: how to send a request, and where its CPU is read."""

    call: Call
    meter: CpuMeter

    async def measure(self, jobs: Sequence[Tenant], concurrency: int) -> Run:
        """`drive` the jobs, with the CPU each side spent meanwhile. The client's (this process's) is read
        right around the requests, so that reading the other sides' does not count as the client's."""
        before = await self.meter.read()
        client_before = own_cpu()
        run = await drive(jobs, concurrency, self.call)
        client = own_cpu() - client_before
        run.cpu = {"client": client, **(await self.meter.read()).since(before)}
        return run


def backend_memory_mb(pids: Sequence[int]) -> tuple[float, float]:
    """(sum, max) of the unique set size of the given PostgreSQL backends, in MB."""
    sizes = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            sizes.append(psutil.Process(pid).memory_full_info().uss / 2**20)
    return (sum(sizes), max(sizes, default=0.0))


# ----------------------------------------------------------------------------------------------- profile


def find_py_spy(given: str | None) -> str | None:
    if given:
        return given
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


# Stages of a request, matched against py-spy frames ("function (file:line)"); a sample counts for a stage
# when its stack passes through it, so shares are inclusive and nested stages overlap.
PROFILE_STAGES: tuple[tuple[str, str], ...] = (
    ("HTTP, ASGI and middleware around /graphql (uvicorn, Starlette, api/middleware)", ""),
    ("bearer token verification (`verify_access_token`, joserfc ES256)", r"^_verify "),
    ("tenant look-up (`TenantDirectory.resolve`)", r"^TenantDirectory\.resolve "),
    ("unit of work: BEGIN, SET LOCAL, COMMIT (`tenant_transaction`)", r"^tenant_transaction "),
    ("GraphQL execution of the operation (`Schema.execute`)", r"^Schema\.execute "),
    ("… `residents` resolver: SQL round trip, rows to `ResidentSummary`", r"^ResidentQueries\.residents "),
    ("… … rows to `ResidentSummary` (`list_residents`)", r"^list_residents\.<locals>\.<listcomp> "),
    ("… completing the 20 edges (graphql-core + strawberry, per field)", r"^Executor\.complete_list_value "),
    ("connection release to the pool (asyncpg reset query)", r"^PoolConnectionHolder\.release "),
    (
        "JSON encoding and decoding (orjson, through `GraphQLView.encode_json` / `decode_json`)",
        r"^GraphQLView\.(en|de)code_json |\(json/",
    ),
)
_OUTSIDE_VIEW = re.compile(r"^GraphQLEndpoint\.__call__ ")
_IN_REQUEST = re.compile(r"^RequestResponseCycle\.run_asgi ")


def _package(frame: str) -> str:
    found = re.search(r"\(([^:()]+):\d+\)", frame)
    path = found.group(1) if found else frame
    if path.startswith("asyncio/runners"):
        return "event loop and C extensions (uvloop, asyncpg protocol, httptools)"
    if path == "<string>":
        return "generated code (dataclass methods, lambdas)"
    top = path.split("/")[0]
    return top[:-3] + " (stdlib)" if top.endswith(".py") else top


@dataclass
class Profile:
    samples: int
    stages: list[tuple[str, float]]
    packages: list[tuple[str, float]]


def summarize_profile(raw: Path) -> Profile:
    """Read py-spy's collapsed stacks: the share of samples in each stage, and by package of the innermost
    frame (where the CPU actually was)."""
    stages: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    patterns = [(name, re.compile(pattern)) for name, pattern in PROFILE_STAGES]
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = stack.split(";")
        packages[_package(frames[-1])] += samples
        if any(_IN_REQUEST.search(f) for f in frames) and not any(_OUTSIDE_VIEW.search(f) for f in frames):
            stages[PROFILE_STAGES[0][0]] += samples
        for name, pattern in patterns[1:]:
            if any(pattern.search(frame) for frame in frames):
                stages[name] += samples
    share = 1 / total if total else 0.0
    return Profile(
        samples=total,
        stages=[(name, stages[name] * share) for name, _ in PROFILE_STAGES],
        packages=[(name, count * share) for name, count in packages.most_common(10)],
    )


# ---------------------------------------------------------------------------------------------------- run


def log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> Results:
    from tenants.db import asyncpg_dsn, close_database, open_database
    from tenants.migrate import migrate_all

    results = Results(args=args, started=datetime.now(UTC))
    cpu_at_start = psutil.cpu_times()
    async with scratch_database(args.database_url, "yiyang_bench", keep=args.keep_database) as database_url:
        dsn = asyncpg_dsn(database_url)
        log(
            f"scratch database {database_name(dsn)}"
            + (" (kept: --keep-database)" if args.keep_database else "")
        )
        admin = await asyncpg.connect(dsn)
        try:
            results.machine = await describe_machine(admin, dsn)
            await migrate_all(database_url)  # the shared schema; no tenants yet

            await open_database(database_url)
            try:
                tenants = await provision_all(args.institutions, results)
                results.select_sql = page_select_sql(args.page_size + 1)
            finally:
                await close_database()
            log(f"provisioned {len(tenants)} institutions in {results.provision_total:.1f} s")

            root_key = secrets.token_bytes(32)  # the API's (bench_keys): the residents are sealed under it
            await fill_residents(database_url, tenants, args.residents_per_institution, results, root_key)
            log(f"{results.residents_total} residents in {results.fill_seconds:.1f} s")

            await bench_migrations(database_url, len(tenants), results)
            await bench_latency(args, database_url, admin, tenants, results, root_key)
        finally:
            await admin.close()
    results.finished = datetime.now(UTC)
    results.machine["Load during the run"] = machine_load_since(cpu_at_start)
    return results


def database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


def split(jobs: Sequence[Tenant], count: int) -> list[Sequence[Tenant]]:
    """`jobs` cut into `count` consecutive chunks whose sizes differ by at most one."""
    return [jobs[len(jobs) * k // count : len(jobs) * (k + 1) // count] for k in range(count)]


async def bench_latency(
    args: argparse.Namespace,
    database_url: str,
    admin: asyncpg.Connection,
    tenants: Sequence[Tenant],
    results: Results,
    root_key: bytes,
) -> None:
    """The API and the bare asyncpg pool, up together and holding as many connections in all: warm-up,
    interleaved rounds, the httpx run, the single-client runs and, if asked for, the profile."""
    from tenants.db import asyncpg_dsn

    dsn = asyncpg_dsn(database_url)
    database = database_name(dsn)
    rng = random.Random(args.seed)
    jobs = rng.choices(tenants, k=args.requests)
    serial_jobs = rng.choices(tenants, k=args.serial_requests)
    warmup_jobs = rng.sample(tenants, k=len(tenants))
    expected = min(args.page_size, args.residents_per_institution)
    results.api_pool_size = max(1, args.pool_size // args.api_workers)
    connections = results.api_pool_size * args.api_workers
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)

    keys = await bench_keys(database_url, root_key)
    with api_server(
        database_url, args.redis_url, results.api_pool_size, keys, args.api_workers, args.api_env
    ) as server:
        results.rss["after start"] = server.rss_mb()
        headers = staff_tokens(server.signing_key, tenants)
        api_meter = CpuMeter(admin, database, "yiyang", server)
        async with (
            httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as http,
            asyncpg.create_pool(
                dsn,
                min_size=connections,
                max_size=connections,
                server_settings={"search_path": "shared", "application_name": BARE_APPLICATION},
            ) as pool,
        ):
            bare = Target(
                bare_call(pool, results.select_sql, args.page_size + 1, expected),
                CpuMeter(admin, database, BARE_APPLICATION),
            )
            await warm_up(
                warmup_jobs,
                args.concurrency,
                graphql_call(http, headers, expected, check_body=True),
                bare,
                results,
            )
            results.rss["after warm-up (every institution served once)"] = server.rss_mb()

            async with RawHttpClients(server.base_url, args.concurrency) as raw:
                graphql = Target(raw.call(headers, expected), api_meter)
                results.rounds = await interleaved_rounds(
                    graphql, bare, split(jobs, args.rounds), args.concurrency
                )
                results.rss[f"after the latency rounds ({args.requests:,} requests through GraphQL)"] = (
                    server.rss_mb()
                )
                results.backend_memory = await api_backend_memory(admin, database)

                httpx_graphql = Target(graphql_call(http, headers, expected, check_body=False), api_meter)
                results.graphql_httpx = await httpx_graphql.measure(jobs, args.concurrency)
                log(f"GraphQL c={args.concurrency} through httpx: {latency_summary(results.graphql_httpx)}")

                if args.serial_requests:
                    results.graphql_serial = await graphql.measure(serial_jobs, 1)
                    results.bare_serial = await bare.measure(serial_jobs, 1)

                if args.profile:  # the API with as little client noise as possible
                    await profile_server(server, args, jobs, graphql.call, results)

        results.rss["at the end"] = server.rss_mb()
        log(f"RSS: {', '.join(f'{k}: {v:.0f} MB' for k, v in results.rss.items())}")


async def warm_up(
    jobs: Sequence[Tenant], concurrency: int, graphql: Call, bare: Target, results: Results
) -> None:
    """Every institution served once through each path: the API's tenant directory and every pool
    connection's statement and catalog caches are warm before anything is timed."""
    results.warmup = await drive(jobs, concurrency, graphql)
    log(
        f"warm-up: {results.warmup.count} requests in {results.warmup.wall:.1f} s, "
        f"{results.warmup.failures} failed"
    )
    await drive(jobs, concurrency, bare.call)


async def interleaved_rounds(
    graphql: Target, bare: Target, chunks: Sequence[Sequence[Tenant]], concurrency: int
) -> list[Round]:
    """Each chunk through both paths, one right after the other, the first path alternating by round."""
    rounds: list[Round] = []
    for number, chunk in enumerate(chunks):
        graphql_first = number % 2 == 0
        if graphql_first:
            graphql_run = await graphql.measure(chunk, concurrency)
            bare_run = await bare.measure(chunk, concurrency)
        else:
            bare_run = await bare.measure(chunk, concurrency)
            graphql_run = await graphql.measure(chunk, concurrency)
        rounds.append(Round(graphql_first, graphql_run, bare_run))
        log(
            f"round {number + 1}/{len(chunks)}: GraphQL {latency_summary(graphql_run)}; "
            f"bare asyncpg {latency_summary(bare_run)}; p50 ratio {rounds[-1].ratio:.2f}"
        )
    log(
        f"all rounds: GraphQL {latency_summary(pooled([r.graphql for r in rounds]))}; "
        f"bare asyncpg {latency_summary(pooled([r.bare for r in rounds]))}"
    )
    return rounds


def latency_summary(run: Run) -> str:
    return f"p50 {ms(run.p(50), 2)}, p99 {ms(run.p(99), 2)}, {run.throughput:,.0f}/s"


async def api_backend_memory(admin: asyncpg.Connection, database: str) -> dict[str, float]:
    """The PostgreSQL backends of the API's pools: how many, and their private memory (MB)."""
    pids = await backend_pids(admin, database, "yiyang")
    total, biggest = backend_memory_mb(pids)
    return {"connections": len(pids), "total": total, "max": biggest}


async def profile_server(
    server: Server,
    args: argparse.Namespace,
    jobs: Sequence[Tenant],
    call: Call,
    results: Results,
) -> None:
    """A further, untimed pass of the latency run with py-spy sampling the API processes."""
    py_spy = find_py_spy(args.py_spy)
    if py_spy is None:
        log("py-spy not found: no profile (give --py-spy PATH)")
        return
    raw = Path(args.profile)
    duration = max(5, int((results.graphql.wall if results.graphql else 10) * 1.5) + 5)
    recorder = await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--subprocesses",
        "--pid",
        str(server.pid),
        "--rate",
        "200",
        "--format",
        "raw",
        "--duration",
        str(duration),
        "--output",
        str(raw),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.0)
    started = time.monotonic()
    await drive(jobs, args.concurrency, call)
    log(f"profiled pass: {time.monotonic() - started:.1f} s; waiting for py-spy ({duration} s in all)")
    _, stderr = await recorder.communicate()
    if recorder.returncode != 0 or not await asyncio.to_thread(raw.exists):
        log(f"py-spy failed: {stderr.decode(errors='replace')[-500:]}")
        return
    results.profile = await asyncio.to_thread(summarize_profile, raw)


# ------------------------------------------------------------------------------------------------- report


def ms(seconds: float, digits: int = 1) -> str:
    return f"{seconds * 1000:,.{digits}f} ms"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(results: Results) -> str:
    args = results.args
    n = len(results.provision)
    lines: list[str] = [SECTION_BEGIN, f"## Tenancy at {n:,} institutions", ""]
    duration = (results.finished - results.started).total_seconds() if results.finished else 0
    command = [
        "yiyang",
        "bench",
        "tenancy",
        "--institutions",
        str(args.institutions),
        "--residents-per-institution",
        str(args.residents_per_institution),
        "--requests",
        str(args.requests),
        "--rounds",
        str(args.rounds),
        "--concurrency",
        str(args.concurrency),
        *(["--api-workers", str(args.api_workers)] if args.api_workers != 1 else []),
        *(f"--api-env={item}" for item in args.api_env),
        *(["--profile", args.profile] if args.profile else []),
    ]
    lines += [
        f"Measured {results.started:%Y-%m-%d %H:%M} UTC with `{shlex.join(command)}` "
        f"({duration / 60:.1f} min in all). Client, API and PostgreSQL ran on the same machine.",
        "",
        "| machine | |",
        "| --- | --- |",
        *(f"| {key} | {value} |" for key, value in results.machine.items()),
        "",
    ]

    last = results.provision[-20:]
    graphql, bare = results.graphql, results.bare
    rss_peak = max(results.rss.values(), default=float("nan"))
    rss_warm = next((v for k, v in results.rss.items() if k.startswith("after warm-up")), rss_peak)
    lines += ["### Against the goals", "", "| measure | result | goal | |", "| --- | --- | --- | --- |"]
    lines.append(
        f"| provision one institution (the last 20, with {n - len(last):,} schemas already there) "
        f"| p50 {ms(percentile(last, 50))}, max {ms(max(last))} | ≤ 1 s | "
        f"{verdict(max(last) <= GOAL_PROVISION_S)} |"
    )
    lines.append(
        f"| one additive migration on all {results.migrate_all_schemas:,} schemas (`migrate_all`) "
        f"| {results.migrate_all_seconds:.1f} s | ≤ 30 s | "
        f"{verdict(results.migrate_all_seconds <= GOAL_MIGRATE_ALL_S)} |"
    )
    lines.append(
        f"| no-op migrate: `migrate_all` / the `yiyang migrate` command end to end "
        f"| {ms(results.noop_seconds, 0)} / {results.noop_cli_seconds:.2f} s | ≤ 5 s | "
        f"{verdict(max(results.noop_seconds, results.noop_cli_seconds) <= GOAL_NOOP_MIGRATE_S)} |"
    )
    summed = (
        f"; sum over `yiyang serve` and its {args.api_workers} API processes" if args.api_workers > 1 else ""
    )
    lines.append(
        f"| API process RSS after serving all {n:,} institutions (peak over the run){summed} "
        f"| {rss_warm:.0f} MB ({rss_peak:.0f} MB) | ≤ 400 MB | {verdict(rss_peak <= GOAL_RSS_MB)} |"
    )
    if graphql and bare:
        lines += goal_latency_rows(results, graphql, bare)
    lines.append("")

    everything = results.provision
    lines += [
        "### Provisioning",
        "",
        f"{n:,} institutions through `provision_institution`, one after the other: "
        f"**{results.provision_total:.1f} s** in all, "
        f"{ms(results.provision_total / max(n, 1))} per institution.",
        "",
        "| provisionings | p50 | p95 | max |",
        "| --- | --- | --- | --- |",
        f"| the first 20 (empty registry) | {ms(percentile(everything[:20], 50))} | "
        f"{ms(percentile(everything[:20], 95))} | {ms(max(everything[:20]))} |",
        f"| the last 20 | {ms(percentile(last, 50))} | {ms(percentile(last, 95))} | {ms(max(last))} |",
        f"| all {n:,} | {ms(percentile(everything, 50))} | {ms(percentile(everything, 95))} | "
        f"{ms(max(everything))} |",
        "",
        f"Residents: {results.residents_total:,} ({args.residents_per_institution} per institution, one "
        f"`INSERT … SELECT generate_series` per schema, 8 at a time) in {results.fill_seconds:.1f} s.",
        "",
        "### Migrations",
        "",
        f"- The real tenant migrations plus `ALTER TABLE resident ADD COLUMN bench_note text`, through "
        f"`migrate_all` (8 schemas at a time, each in its own transaction with its ledger row): "
        f"{results.migrate_all_seconds:.2f} s for {results.migrate_all_schemas:,} schemas "
        f"({ms(results.migrate_all_seconds / max(results.migrate_all_schemas, 1))} per schema).",
        f"- The same run again, nothing to do: {ms(results.noop_seconds)} (one ledger query). The "
        f"`yiyang migrate` command, interpreter start included: {results.noop_cli_seconds:.2f} s.",
        "",
        "### API process memory",
        "",
        "| moment | RSS |",
        "| --- | --- |",
        *(f"| {moment} | {value:.0f} MB |" for moment, value in results.rss.items()),
        "",
    ]
    if results.backend_memory:
        memory = results.backend_memory
        lines += [
            f"The PostgreSQL side of the API's pools ({memory['connections']:.0f} connections after the "
            f"latency rounds, each having touched a share of the {n:,} schemas): "
            f"{memory['total']:.0f} MB private memory (USS) in all, "
            f"{memory['max']:.1f} MB for the largest backend.",
            "",
        ]
    if graphql and bare:
        lines += latency_section(results, graphql, bare)
    if results.profile and graphql:
        lines += profile_section(results, results.profile, graphql)
    lines += [SECTION_END, ""]
    return "\n".join(lines)


def goal_latency_rows(results: Results, graphql: Run, bare: Run) -> list[str]:
    """The latency goal: the interleaved minimal-client GraphQL run against the bare run, rounds pooled."""
    args = results.args
    ratio50, ratio99 = graphql.p(50) / bare.p(50), graphql.p(99) / bare.p(99)
    rows = [
        f"| `residents(first: 20)` at {args.concurrency} clients, GraphQL (minimal HTTP client) vs bare "
        f"asyncpg, {graphql.count:,} requests each in {len(results.rounds)} interleaved rounds, p50 "
        f"| {ms(graphql.p(50), 2)} vs {ms(bare.p(50), 2)}: **{ratio50:.2f}×** "
        f"(per round: {round_ratios(results.rounds)}) | ≤ 3× | {verdict(ratio50 <= GOAL_LATENCY_RATIO)} |",
        f"| the same, p99 | {ms(graphql.p(99), 2)} vs {ms(bare.p(99), 2)}: **{ratio99:.2f}×** | ≤ 3× | "
        f"{verdict(ratio99 <= GOAL_LATENCY_RATIO)} |",
    ]
    driven = results.graphql_httpx
    if driven:
        rows.append(
            f"| the same GraphQL requests driven by httpx, one run after the rounds (includes httpx's own "
            f"CPU per request), p50 / p99 against the pooled bare run | {ms(driven.p(50), 2)} / "
            f"{ms(driven.p(99), 2)}: {driven.p(50) / bare.p(50):.2f}× / {driven.p(99) / bare.p(99):.2f}× "
            f"| not counted | – |"
        )
    return rows


def round_ratios(rounds: Sequence[Round]) -> str:
    ratios = [r.ratio for r in rounds]
    return f"median {statistics.median(ratios):.2f}×, range {min(ratios):.2f}–{max(ratios):.2f}×"


def latency_section(results: Results, graphql: Run, bare: Run) -> list[str]:
    args = results.args
    per_process = results.api_pool_size
    connections = per_process * args.api_workers
    processes = "one process" if args.api_workers == 1 else f"{args.api_workers} processes"
    warmup_wall = results.warmup.wall if results.warmup else 0.0
    lines = [
        "### `residents(first: 20)` latency",
        "",
        f"{args.requests:,} requests for random institutions, the same sequence for both paths, in "
        f"{len(results.rounds)} rounds: in each round a chunk of them went through GraphQL and the same "
        f"chunk through bare asyncpg right after it, GraphQL first in odd rounds and bare asyncpg first in "
        f"even ones, with the API up and the bare pool open throughout, so that both paths are measured "
        f"within the same few seconds; the rounds one by one, below, show how much they still differ. "
        f"Latencies are pooled over the rounds per path. Before the rounds, a warm-up pass served every "
        f"institution once through each path (GraphQL through httpx: {warmup_wall:.1f} s at "
        f"{args.concurrency} clients).",
        "",
        f"GraphQL: `POST /graphql` with the institution's staff token, to uvicorn (uvloop, httptools) in "
        f"{processes} with a pool of {per_process} connections each (`YIYANG_DB_POOL_SIZE={per_process}`), "
        f"{connections} in all. Bare asyncpg: one pool of {connections} connections, the same number, "
        f"sending the statements the API sends per request:",
        "",
        "```sql",
        "BEGIN;",
        'SET LOCAL search_path TO "t_…", shared;',
        f"{results.select_sql};  -- prepared, ${{1}} = {args.page_size + 1}"
        if "$1" in results.select_sql
        else f"{results.select_sql};",
        "COMMIT;",
        "-- and, as asyncpg's pool releases the connection (on both paths):",
        "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;",
        "```",
        "",
        "(Checked with `log_statement = 'all'`. On a miss of its 30 s tenant directory cache, the API "
        "also reads the institution from `shared.institution` before the unit of work.)",
        "",
        *instrument_note(results, graphql),
        "| path | clients | requests | p50 | p90 | p99 | max | throughput | CPU per request: "
        "client / API / PostgreSQL | failed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, result, clients in (
        ("GraphQL, minimal HTTP client (rounds pooled)", graphql, args.concurrency),
        ("bare asyncpg (rounds pooled)", bare, args.concurrency),
        (
            "GraphQL, httpx client (one run after the rounds; not counted)",
            results.graphql_httpx,
            args.concurrency,
        ),
        ("GraphQL, minimal HTTP client", results.graphql_serial, 1),
        ("bare asyncpg", results.bare_serial, 1),
    ):
        if result is None:
            continue
        cpu = " / ".join(
            "–" if (seconds := result.cpu_per_request(side)) is None else ms(seconds, 2)
            for side in ("client", "api", "postgres")
        )
        lines.append(
            f"| {name} | {clients} | {result.count:,} | {ms(result.p(50), 2)} | {ms(result.p(90), 2)} | "
            f"{ms(result.p(99), 2)} | {ms(max(result.latencies), 2)} | {result.throughput:,.0f}/s | "
            f"{cpu} | {result.failures} |"
        )
    lines += [
        "",
        f"The rounds one by one ({args.concurrency} clients; per-round p50 ratio "
        f"{round_ratios(results.rounds)}):",
        "",
        "| round | first | requests per path | GraphQL p50 | bare asyncpg p50 | p50 ratio |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {number} | {'GraphQL' if r.graphql_first else 'bare asyncpg'} | {r.graphql.count:,} | "
            f"{ms(r.graphql.p(50), 2)} | {ms(r.bare.p(50), 2)} | {r.ratio:.2f}× |"
            for number, r in enumerate(results.rounds, start=1)
        ),
        "",
        *latency_reading(args, graphql, bare),
    ]
    failures = [sample for run in results.runs() for sample in run.failure_samples]
    if failures:
        lines += ["Failures (first ones):", "", *(f"- `{sample}`" for sample in failures), ""]
    return lines


def instrument_note(results: Results, graphql: Run) -> list[str]:
    """Why the minimal HTTP client is the measuring instrument, in the run's own figures."""
    minimal = graphql.cpu_per_request("client")
    driven = results.graphql_httpx.cpu_per_request("client") if results.graphql_httpx else None
    api = graphql.cpu_per_request("api")
    expected = min(results.args.page_size, results.args.residents_per_institution)
    if minimal is None or driven is None or api is None:
        return []
    return [
        f"The GraphQL requests of the rounds are sent by a minimal keep-alive HTTP/1.1 client (request bytes "
        f"built in advance; each response checked for status 200, no errors and {expected} cursors): it "
        f"spent {ms(minimal, 2)} of CPU per request, httpx {ms(driven, 2)} on the same requests, and the "
        f"API {ms(api, 2)}. The client, the API and PostgreSQL share the machine's "
        f"{os.cpu_count() or 1} cores, so a client's CPU is taken from the API and PostgreSQL: driven by "
        f"httpx, every request also waits for httpx's CPU. That run is shown for comparison and not counted "
        f"against the goal.",
        "",
    ]


def profile_section(results: Results, profile: "Profile", graphql: Run) -> list[str]:
    per_request = graphql.cpu_per_request("api") or 0.0

    def row(name: str, share: float) -> str:
        return f"| {name} | {share:.0%} | {ms(share * per_request, 2)} |"

    return [
        "### Where the API processes spend their CPU",
        "",
        f"py-spy, {profile.samples:,} samples at 200 Hz of the API processes during a further, untimed "
        f"pass of the latency run's {results.args.requests:,} requests (minimal HTTP client, "
        f"{results.args.concurrency} clients). The per-request figures apportion the {ms(per_request, 2)} of "
        f"API CPU per request measured in the rounds.",
        "",
        "| stage of a request (inclusive; the rows marked … are parts of the row above) | share | "
        "per request |",
        "| --- | --- | --- |",
        *(row(name, share) for name, share in profile.stages),
        "",
        "| where the CPU was (innermost frame, by package) | share | per request |",
        "| --- | --- | --- |",
        *(row(name, share) for name, share in profile.packages),
        "",
    ]


@dataclass(frozen=True)
class Ceiling:
    """An upper bound on a path's throughput (requests/s), and what sets it."""

    per_second: float
    what: str


def ceilings(run: Run, api_workers: int) -> list[Ceiling]:
    """The throughput a path cannot exceed given its measured CPU per request, tightest first: the cores
    that client, API processes and PostgreSQL share; the API processes, one core each at most; the
    client's one Python thread."""
    cores = os.cpu_count() or 1
    client, api = run.cpu_per_request("client"), run.cpu_per_request("api")
    total = cpu_per_request_total(run)
    processes = "one API process" if api_workers == 1 else f"the {api_workers} API processes"
    found = [
        *([Ceiling(cores / total, f"the {cores} cores they share")] if total else []),
        *([Ceiling(api_workers / api, processes)] if api else []),
        *([Ceiling(1 / client, "the client's one thread")] if client else []),
    ]
    return sorted(found, key=lambda ceiling: ceiling.per_second)


def cpu_per_request_total(run: Run) -> float:
    """CPU seconds per request of client, API and PostgreSQL together."""
    return sum(run.cpu_per_request(side) or 0.0 for side in ("client", "api", "postgres"))


def path_reading(name: str, run: Run, concurrency: int, api_workers: int) -> str | None:
    """One path's CPU per request, the throughput ceiling it sets and the mean latency at that ceiling,
    next to what was measured. None without CPU figures."""
    found = ceilings(run, api_workers)
    if not found or not run.wall:
        return None
    tightest, *others = found
    spent = " + ".join(
        f"{ms(seconds, 2)} {label}"
        for side, label in (("client", "client"), ("api", "API"), ("postgres", "PostgreSQL"))
        if (seconds := run.cpu_per_request(side)) is not None
    )
    alternatives = "; ".join(f"{ceiling.what}: {ceiling.per_second:,.0f}/s" for ceiling in others)
    in_flight = sum(run.latencies) / run.wall
    return (
        f"{name}: {spent} = {ms(cpu_per_request_total(run), 2)} of CPU per request, so at most "
        f"{tightest.per_second:,.0f} requests/s on {tightest.what} ({alternatives}), at which "
        f"{concurrency} requests in flight take {concurrency} / {tightest.per_second:,.0f} per s = "
        f"{ms(concurrency / tightest.per_second, 2)} on average. Measured: {run.throughput:,.0f} requests/s "
        f"({run.throughput / tightest.per_second:.0%} of that ceiling) with {in_flight:.1f} requests in "
        f"flight on average (fewer than {concurrency} as each round ends), so a mean of "
        f"{ms(run.mean, 2)} (p50 {ms(run.p(50), 2)})."
    )


def latency_reading(args: argparse.Namespace, graphql: Run, bare: Run) -> list[str]:
    """What bounds each path: closed-loop clients wait in line for the scarcest CPU (Little's law)."""
    graphql_text = path_reading("GraphQL (minimal client)", graphql, args.concurrency, args.api_workers)
    bare_text = path_reading("Bare asyncpg", bare, args.concurrency, args.api_workers)
    if graphql_text is None or bare_text is None:
        return []
    return [
        "Reading: the mean latency of clients that each wait for their answer before asking again is the "
        "number of requests in flight over the throughput (Little's law), and the throughput is capped "
        "by the CPU each request needs on the cores that client, API processes and PostgreSQL share "
        f"(figures of the rounds, pooled). {graphql_text} {bare_text} Per request, GraphQL spends "
        f"{cpu_per_request_total(graphql) / cpu_per_request_total(bare):.1f}× the CPU of bare asyncpg; "
        f"the measured means are {graphql.mean / bare.mean:.2f}× apart, the p50s "
        f"{graphql.p(50) / bare.p(50):.2f}×.",
        "",
    ]


def write_section(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else INTRO
    begin, end = text.find(SECTION_BEGIN), text.find(SECTION_END)
    if begin != -1 and end != -1:
        text = text[:begin] + section.rstrip("\n") + text[end + len(SECTION_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yiyang bench tenancy",
        description="Provision many institution schemas in a scratch database and measure provisioning, "
        "migrations, API memory and latency; results go into a section of docs/benchmarks.md.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        help="a PostgreSQL server where databases may be created (default: $DATABASE_URL, else %(default)s)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    parser.add_argument("--institutions", type=int, default=1500)
    parser.add_argument("--residents-per-institution", type=int, default=20)
    parser.add_argument(
        "--requests",
        type=int,
        default=3000,
        help="requests per path at --concurrency clients, over all rounds",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="interleaved rounds the GraphQL and bare asyncpg requests are split into (default: %(default)s)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument(
        "--serial-requests", type=int, default=300, help="requests of the extra one-client runs (0: skip)"
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=20,
        help="connections per path: split evenly over the API processes (rounded down, at least one each); "
        "the bare asyncpg pool holds as many as the API processes together",
    )
    parser.add_argument("--page-size", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--api-workers", type=int, default=2, help="API processes (`yiyang serve --workers`)")
    parser.add_argument(
        "--api-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the API process, for experiments (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=1500)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="also profile the API with py-spy during an extra, untimed pass; raw stacks to FILE",
    )
    parser.add_argument("--py-spy", metavar="PATH", help="the py-spy executable (default: from PATH)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the scratch database")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if (
        min(args.institutions, args.requests, args.rounds, args.concurrency, args.pool_size, args.api_workers)
        < 1
    ):
        sys.exit(
            "--institutions, --requests, --rounds, --concurrency, --pool-size and --api-workers "
            "must be positive"
        )
    if args.rounds > args.requests:
        sys.exit("--rounds must not exceed --requests")
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        results = runner.run(run(args))
    section = render(results)
    write_section(args.output, section)
    log(f"wrote {args.output}")
    print(section)
    return 1 if any(run.failures for run in results.runs()) else 0


__all__ = ["main"]
