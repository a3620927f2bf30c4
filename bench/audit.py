"""`yiyang bench audit`: what the audit log costs a unit of work, and `audit verify` over 1,000,000 events.

In a scratch database created for the run (and dropped afterwards) it provisions one institution, then

- times units of work that record one event (advisory lock, last row, insert) against empty units of
  work, one after another, and then many writers of the same tenant at once (appends are serialised per
  tenant until each unit of work commits);
- fills the tenant's audit_event with N events (1,000,000 by default) chained as `record_event` chains
  them, hashes computed in Python in batches and written with COPY, signs a checkpoint at the end;
- times `verify_tenant` (server-side cursor, every hash recomputed, the checkpoint's signature checked)
  and the process's peak memory before and after,

and writes the figures with the machine into a section of docs/benchmarks.md.
"""

import argparse
import asyncio
import hashlib
import os
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from api.services import scratch_database
from api.settings import REPO_ROOT
from bench.search import write_section
from bench.tenancy import describe_machine, machine_table, percentile
from compliance.audit import AuditEvent, Outcome, record_event
from compliance.audit.chain import COLUMNS, GENESIS_HASH, canonical_encoding
from compliance.audit.checkpoints import checkpoint
from compliance.audit.verify import verify_tenant
from tenants.context import TenantRef
from tenants.db import asyncpg_dsn, close_database, default_connection, open_database
from tenants.migrate import migrate_all
from tenants.registry import NewInstitution, get_or_create_region, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant

SECTION_BEGIN = "<!-- bench:audit:begin -->"
SECTION_END = "<!-- bench:audit:end -->"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"


def sample_event(number: int) -> AuditEvent:
    denied = number % 50 == 0
    return AuditEvent(
        principal_subject=f"account:{1000 + number % 97}",
        principal_kind="staff",
        roles=("nurse",),
        client_id="yiyang-web",
        action="vitals.view" if number % 3 else "health_record.view",
        resident_id=1 + number % 500,
        data_categories=("vitals",) if number % 3 else ("diagnoses", "medications"),
        purpose="care_delivery",
        outcome=Outcome.DENIED if denied else Outcome.PERMITTED,
        reason_code="no_consent" if denied else None,
        request_id=f"{number:032x}",
        client_ip="10.1.2.3",
    )


async def time_units(tenant: TenantRef, count: int, *, record: bool) -> list[float]:
    timings: list[float] = []
    for number in range(count):

        async def work(number: int = number) -> None:
            if record:
                await record_event(sample_event(number))
            else:
                await default_connection().execute_query("SELECT 1")

        started = time.perf_counter()
        await run_in_tenant(tenant, work)
        timings.append(time.perf_counter() - started)
    return timings


async def concurrent_appends(tenant: TenantRef, writers: int, each: int) -> float:
    """Events per second with `writers` units of work of one tenant appending at once."""

    async def writer(offset: int) -> None:
        for number in range(each):
            await run_in_tenant(tenant, lambda n=offset * each + number: record_event(sample_event(n)))

    started = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    return writers * each / (time.perf_counter() - started)


async def fill(connection: asyncpg.Connection, tenant: TenantRef, count: int, batch: int = 20_000) -> None:
    """`count` events after the tenant's last, chained exactly as record_event chains them."""
    last = await connection.fetchrow(
        f'SELECT seq, hash FROM "{tenant.schema_name}".audit_event ORDER BY seq DESC LIMIT 1'
    )
    seq, prev = (last["seq"], bytes(last["hash"])) if last else (0, GENESIS_HASH)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    done = 0
    while done < count:
        records = []
        for _ in range(min(batch, count - done)):
            seq += 1
            e = sample_event(seq)
            moment = start + timedelta(seconds=seq)
            fields = (
                seq,
                moment,
                e.principal_subject,
                e.principal_kind,
                list(e.roles),
                e.client_id,
                e.action,
                e.resident_id,
                list(e.data_categories),
                e.purpose,
                str(e.outcome),
                e.reason_code,
                e.request_id,
                e.client_ip,
            )
            digest = hashlib.sha256(canonical_encoding(tenant.institution_id, *fields, prev)).digest()
            records.append((*fields, prev, digest))
            prev = digest
        await connection.copy_records_to_table(
            "audit_event", schema_name=tenant.schema_name, records=records, columns=COLUMNS
        )
        done += len(records)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, str]]:
    figures: dict[str, float] = {}
    async with scratch_database(args.database_url, "yiyang_bench_audit") as url:
        await migrate_all(url)
        await open_database(url)
        admin = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await get_or_create_region("bench-east", "华东基准区")
            tenant = tenant_ref(
                await provision_institution(NewInstitution(name="审计基准院", region_code="bench-east"))
            )
            await time_units(tenant, args.warm_up, record=True)
            await time_units(tenant, args.warm_up, record=False)
            plain, audited = [], []
            for _ in range(args.iterations // 50):
                plain += await time_units(tenant, 50, record=False)
                audited += await time_units(tenant, 50, record=True)
            figures["plain_p50"], figures["plain_p95"] = percentile(plain, 50), percentile(plain, 95)
            figures["audited_p50"], figures["audited_p95"] = percentile(audited, 50), percentile(audited, 95)
            figures["serial_rate"] = 1 / figures["audited_p50"]
            figures["concurrent_rate"] = await concurrent_appends(tenant, args.writers, 50)
            started = time.perf_counter()
            await fill(admin, tenant, args.events)
            figures["fill_s"] = time.perf_counter() - started
            point = await checkpoint(tenant)
            assert point is not None
            figures["memory_before_mib"] = peak_mib()
            started = time.perf_counter()
            report = await verify_tenant(tenant)
            figures["verify_s"] = time.perf_counter() - started
            figures["memory_after_mib"] = peak_mib()
            if not report.intact:
                raise SystemExit("\n".join(report.lines()))
            figures["events"] = report.events
            machine = await describe_machine(admin, url)
        finally:
            await admin.close()
            await close_database()
    return figures, machine


def render(args: argparse.Namespace, figures: dict[str, float], machine: dict[str, str]) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.2f} ms"

    overhead = figures["audited_p50"] - figures["plain_p50"]
    lines = [
        SECTION_BEGIN,
        "## Audit log",
        "",
        "`yiyang bench audit` (bench/audit.py): in-process against a scratch database.",
        "",
        f"Recording one event in a unit of work (advisory lock of the tenant, its last row, the insert; "
        f"{args.iterations} runs interleaved with empty units of work):",
        "",
        "| unit of work | p50 | p95 |",
        "| --- | --- | --- |",
        f"| empty (`SELECT 1`) | {ms(figures['plain_p50'])} | {ms(figures['plain_p95'])} |",
        f"| recording one event | {ms(figures['audited_p50'])} | {ms(figures['audited_p95'])} |",
        "",
        f"An event costs a unit of work {ms(overhead)} at the median. Appends of one tenant are serialised "
        f"until each unit of work commits: {figures['concurrent_rate']:,.0f} events/s with {args.writers} "
        "writers of one tenant at once (each a unit of work of its own).",
        "",
        f"`audit verify` of one tenant with {int(figures['events']):,} events (filled in "
        f"{figures['fill_s']:.1f} s with COPY, hashes computed in Python) and a checkpoint: "
        f"**{figures['verify_s']:.1f} s** (goal ≤ 60 s), "
        f"{figures['events'] / figures['verify_s']:,.0f} events/s; peak memory of the process "
        f"{figures['memory_before_mib']:.0f} MiB before, {figures['memory_after_mib']:.0f} MiB after "
        "(server-side cursor, constant memory).",
        "",
        *machine_table(machine),
        "",
        SECTION_END,
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yiyang bench audit",
        description="Time audit writes in a unit of work and `audit verify` over many events; results go "
        "into a section of docs/benchmarks.md.",
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--warm-up", type=int, default=50)
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.events < 1 or args.iterations < 50:
        sys.exit("--events must be positive and --iterations at least 50")
    figures, machine = asyncio.run(run(args))
    section = render(args, figures, machine)
    write_section(args.output, section, begin=SECTION_BEGIN, end=SECTION_END)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
