"""`yiyang bench sweep`: the sweep every minute (workers/sweep.py) over many institutions, end to end.

In a scratch database created for the run (dropped afterwards) it

1. provisions N institutions through `tenants.registry.provision_institution` (a few at a time, timed),
2. fills each one in bulk SQL, 50 institutions per transaction: R residents (identity columns hold
   placeholder bytes: the sweep never opens them), each with a care-plan item and its open task due
   tomorrow, a butler, and an instance of the default new-resident plan (the day-3 family contact): for
   the due share of residents that step is due now (a reminder for the butler), for the others in four
   days; one butler and one head nurse per institution,
3. runs the sweep once in this process (one worker process; the job as the worker runs it, without
   e-mail: the in-app inbox) and times it from its start until it returns, every reminder sent and
   delivered to the inbox (checked by counting the inbox rows and the reminded steps afterwards),
4. runs it again a few times with nothing due, and times those,

and writes the figures, with the machine they were measured on, into a section of docs/benchmarks.md.
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import psutil

from api.services import scratch_database
from api.settings import REPO_ROOT
from bench.search import write_section
from bench.tenancy import describe_machine, machine_load_since, machine_table

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
SECTION_BEGIN = "<!-- bench:sweep:begin -->"
SECTION_END = "<!-- bench:sweep:end -->"
GOAL_DUE_S = 60.0
GOAL_IDLE_S = 5.0
FILL_GROUP = 50  # institutions per fill transaction


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Results:
    institutions: int = 0
    residents: int = 0
    due: int = 0
    provision: list[float] = field(default_factory=list)
    provision_total: float = 0.0
    fill_total: float = 0.0
    due_sweep: float = 0.0
    due_outcome: dict[str, float] = field(default_factory=dict)
    inbox_rows: int = 0
    reminded: int = 0
    idle: list[float] = field(default_factory=list)
    idle_outcome: dict[str, float] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)
    load: str = ""
    concurrency: int = 0
    batch: int = 0


async def provision(count: int, concurrency: int, results: Results) -> list[tuple[int, str]]:
    from tenants.registry import NewInstitution, get_or_create_region, provision_institution

    await get_or_create_region("bench-east", "华东基准区")
    made: list[tuple[int, str]] = []
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(number: int) -> None:
        async with gate:
            began = time.perf_counter()
            institution = await provision_institution(
                NewInstitution(name=f"巡检基准院{number:05d}", region_code="bench-east", bed_capacity=120)
            )
            results.provision.append(time.perf_counter() - began)
            made.append((institution.id, institution.schema_name))
            if len(made) % 100 == 0:
                log(f"provisioned {len(made)}/{count}")

    await asyncio.gather(*(one(number) for number in range(count)))
    results.provision_total = time.perf_counter() - started
    return sorted(made)


def fill_sql(schema: str, institution_id: int, residents: int, due: int) -> str:
    """One institution's residents, plan items, tasks, SOP steps, butler and head nurse, in plain SQL (see
    the docstring)."""
    q = f'"{schema}"'
    return f"""
INSERT INTO {q}.resident (id, care_level, admission_date, name_enc, gender_enc, birth_date_enc)
    SELECT g, 'assisted', date '2025-01-01', '\\x00'::bytea, '\\x00'::bytea, '\\x00'::bytea
    FROM generate_series(1, {residents}) AS g;
SELECT setval(pg_get_serial_sequence('{q}.resident', 'id'), {residents});
INSERT INTO {q}.care_plan_item (id, resident_id, created_by)
    SELECT g, g, 'bench' FROM generate_series(1, {residents}) AS g;
SELECT setval(pg_get_serial_sequence('{q}.care_plan_item', 'id'), {residents});
INSERT INTO {q}.care_plan_item_version (item_id, resident_id, version, kind, rrule, dtstart, assignee_role,
        duration_minutes, recorded_by)
    SELECT g, g, 1, 'repositioning', 'FREQ=DAILY;BYHOUR=9;BYMINUTE=0', timestamp '2025-01-01 09:00',
        'caregiver', 5, 'bench'
    FROM generate_series(1, {residents}) AS g;
INSERT INTO {q}.care_task (item_id, item_version, resident_id, kind, due_at, duration_minutes, assignee_role)
    SELECT g, 1, g, 'repositioning', now() + interval '1 day', 5, 'caregiver'
    FROM generate_series(1, {residents}) AS g;
WITH butler AS (
    INSERT INTO shared.user_account (kind, login, display_name, password_hash)
    VALUES ('staff', 'bench-butler-{institution_id}@example.com', '管家', '$argon2id$bench-no-login')
    RETURNING id),
member AS (
    INSERT INTO shared.staff_membership (account_id, institution_id, role)
    SELECT id, {institution_id}, 'butler' FROM butler RETURNING account_id)
INSERT INTO {q}.resident_butler (resident_id, account_id, assigned_by)
    SELECT g, (SELECT account_id FROM member), 'bench' FROM generate_series(1, {residents}) AS g;
INSERT INTO {q}.sop_instance (id, resident_id, source, template_id, template_version, name, anchor,
        anchor_date)
    SELECT g, g, 'institution', (SELECT id FROM {q}.sop_template WHERE is_default), 1,
        '新入住长者30天关怀计划', 'admission', current_date - 3
    FROM generate_series(1, {residents}) AS g;
INSERT INTO {q}.sop_step (instance_id, resident_id, position, title, assignee, requires_outcome, due_at,
        grace_minutes, escalation_role)
    SELECT g, g, 1, '入住第3天家属回访', 'butler', 'family_communication',
        CASE WHEN g <= {due} THEN now() - interval '1 minute' ELSE now() + interval '4 days' END, 1440,
        'head_nurse'
    FROM generate_series(1, {residents}) AS g;
WITH nurse AS (
    INSERT INTO shared.user_account (kind, login, display_name, password_hash)
    VALUES ('staff', 'bench-head-nurse-{institution_id}@example.com', '护士长', '$argon2id$bench-no-login')
    RETURNING id)
INSERT INTO shared.staff_membership (account_id, institution_id, role)
    SELECT id, {institution_id}, 'head_nurse' FROM nurse;
"""


async def fill(dsn: str, tenants: list[tuple[int, str]], residents: int, due: int, results: Results) -> None:
    connection = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        for start in range(0, len(tenants), FILL_GROUP):
            group = tenants[start : start + FILL_GROUP]
            async with connection.transaction():
                await connection.execute(
                    "".join(
                        fill_sql(schema, institution_id, residents, due) for institution_id, schema in group
                    )
                )
            if (start // FILL_GROUP) % 6 == 5:
                log(f"filled {start + len(group)}/{len(tenants)}")
        results.fill_total = time.perf_counter() - started
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def count_all(dsn: str, tenants: list[tuple[int, str]]) -> tuple[int, int]:
    """(inbox rows, reminded SOP steps) over every institution."""
    connection = await asyncpg.connect(dsn)
    inbox = reminded = 0
    try:
        for start in range(0, len(tenants), 200):
            group = tenants[start : start + 200]
            inbox += await connection.fetchval(
                " + ".join(
                    f'(SELECT count(*) FROM "{schema}".notification_inbox)' for _, schema in group
                ).join(("SELECT ", ""))
            )
            reminded += await connection.fetchval(
                " + ".join(
                    f'(SELECT count(*) FROM "{schema}".sop_step WHERE reminded_at IS NOT NULL)'
                    for _, schema in group
                ).join(("SELECT ", ""))
            )
    finally:
        await connection.close()
    return inbox, reminded


async def run(args: argparse.Namespace) -> Results:
    from care.webhooks import HttpxSender
    from tenants.db import asyncpg_dsn, close_database, open_database
    from tenants.migrate import migrate_all
    from workers.sweep import sweep_due

    results = Results(
        institutions=args.institutions,
        residents=args.residents,
        due=round(args.residents * args.due_share),
        concurrency=args.concurrency,
        batch=args.batch,
    )
    async with scratch_database(args.database_url, "yiyang_bench_sweep") as url:
        dsn = asyncpg_dsn(url)
        admin = await asyncpg.connect(dsn)
        try:
            results.machine = await describe_machine(admin, dsn)
        finally:
            await admin.close()
        cpu_before = psutil.cpu_times()
        await migrate_all(url)
        await open_database(url)
        try:
            tenants = await provision(args.institutions, args.provision_concurrency, results)
            log(f"provisioned {len(tenants)} institutions in {results.provision_total:.1f} s")
            await fill(dsn, tenants, args.residents, results.due, results)
            log(f"filled in {results.fill_total:.1f} s")
            sender = HttpxSender()
            ctx = {"mailer": None, "webhook_sender": sender}
            try:
                now = datetime.now(UTC)
                started = time.perf_counter()
                outcome = await sweep_due(ctx, now=now, concurrency=args.concurrency, batch=args.batch)
                results.due_sweep = time.perf_counter() - started
                results.due_outcome = dict(outcome)
                log(f"sweep with reminders due: {results.due_sweep:.1f} s {outcome}")
                results.inbox_rows, results.reminded = await count_all(dsn, tenants)
                for run_number in range(args.idle_runs):
                    at = now + timedelta(minutes=1 + run_number)
                    started = time.perf_counter()
                    outcome = await sweep_due(ctx, now=at, concurrency=args.concurrency, batch=args.batch)
                    results.idle.append(time.perf_counter() - started)
                    results.idle_outcome = dict(outcome)
                    log(f"sweep with nothing due: {results.idle[-1]:.2f} s {outcome}")
            finally:
                await sender.aclose()
        finally:
            await close_database()
        results.load = machine_load_since(cpu_before)
    return results


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(results: Results) -> str:
    expected = results.institutions * results.due
    provision = sorted(results.provision)
    idle_median = statistics.median(results.idle) if results.idle else float("nan")
    due = results.due_outcome
    share = f"{results.due / results.residents:.0%}"
    due_ok = verdict(results.due_sweep <= GOAL_DUE_S)
    idle_ok = verdict(idle_median <= GOAL_IDLE_S)
    counted_ok = verdict(results.inbox_rows == expected == results.reminded)
    idle = results.idle_outcome
    lines = [
        SECTION_BEGIN,
        "## The sweep every minute",
        "",
        f"`yiyang bench sweep` (bench/sweep.py): {results.institutions:,} institutions × "
        f"{results.residents} residents, {results.due} of them ({share}) with a step of the new-resident "
        f"plan due now (the butler's day-3 family contact) — {expected:,} reminders — the others with "
        "theirs due in four days; every resident with a care task due tomorrow; one butler and one head "
        "nurse per institution. The sweep (workers/sweep.py `sweep_due`) runs in the benchmark's own "
        f"process, one worker process, {results.concurrency} institutions at a time, notifications "
        f"delivered {results.batch} per unit of work, in-app inbox only (no SMTP server). Timed from its "
        "start until "
        "it returns; every reminder was then counted in the inboxes.",
        "",
        "| measure | result | goal | |",
        "| --- | --- | --- | --- |",
        f"| sweep with {expected:,} reminders due: start → every reminder in the inbox | "
        f"**{results.due_sweep:.1f} s** | ≤ {GOAL_DUE_S:.0f} s | {due_ok} |",
        f"| sweep with nothing due (median of {len(results.idle)}; max {max(results.idle, default=0):.2f} s)"
        f" | **{idle_median:.2f} s** | ≤ {GOAL_IDLE_S:.0f} s | {idle_ok} |",
        f"| inbox rows / reminded SOP steps after the first sweep | {results.inbox_rows:,} / "
        f"{results.reminded:,} | {expected:,} each | {counted_ok} |",
        "",
        f"First sweep: pass 1 (escalations, SOP steps, SLA breaches) {due.get('steps_seconds', 0):.1f} s, "
        f"pass 2 (deliveries) {due.get('deliveries_seconds', 0):.1f} s; "
        f"{int(due.get('notifications', 0)):,} notifications delivered, {int(due.get('failures', 0))} "
        f"institutions failed. With nothing due: pass 1 {idle.get('steps_seconds', 0):.2f} s, pass 2 "
        f"{idle.get('deliveries_seconds', 0):.2f} s.",
        "",
        f"Set-up (not part of the goals): provisioning {results.institutions:,} institutions took "
        f"{results.provision_total:.1f} s (p50 {statistics.median(provision) * 1000:.0f} ms, max "
        f"{provision[-1] * 1000:.0f} ms per institution, several at a time); filling them in bulk SQL "
        f"({FILL_GROUP} institutions per transaction) {results.fill_total:.1f} s.",
        "",
        f"Machine load during the run: {results.load}.",
        "",
        *machine_table(results.machine),
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yiyang bench sweep",
        description="Time the sweep every minute over many institutions with reminders due, and with nothing "
        "due; results go into a section of docs/benchmarks.md.",
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    parser.add_argument("--institutions", type=int, default=1500)
    parser.add_argument("--residents", type=int, default=100)
    parser.add_argument("--due-share", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16, help="institutions swept at a time")
    parser.add_argument("--batch", type=int, default=200, help="notifications per unit of work")
    parser.add_argument("--provision-concurrency", type=int, default=4)
    parser.add_argument("--idle-runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.institutions < 1 or args.residents < 1 or not 0 <= args.due_share <= 1:
        sys.exit("--institutions and --residents must be positive, --due-share between 0 and 1")
    results = asyncio.run(run(args))
    section = render(results)
    write_section(args.output, section, begin=SECTION_BEGIN, end=SECTION_END)
    print(section)
    expected = results.institutions * results.due
    return 0 if results.inbox_rows == expected == results.reminded else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
