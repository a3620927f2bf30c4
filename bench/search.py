"""`yiyang bench search`: search and paging of encrypted residents, measured in-process on this machine.

In a scratch database created for the run (and dropped afterwards) it provisions two institutions with
N residents each (1,000 by default, one to three family members each), the first sealed by field-level
encryption as the application writes them, the second with the cipher replaced by the identity (the
same rows and SQL, plaintext bytes in the `*_enc` columns, no data-key query, no AEAD). Then, one unit of
work per operation as a request would have, interleaved so both meet the same machine, it times

- a name-part search (`ResidentFilter(name_contains=…)`: every name of the institution decrypted in
  memory, then the first page of matches),
- an exact ID-card lookup (blind index in SQL, then the page decrypted),
- a page of 50 residents at a random cursor, encrypted and with the identity cipher (issue 4's figure),

and writes p50/p95 with the machine into a section of docs/benchmarks.md.
"""

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import asyncpg

import care.residents as residents
from api.services import scratch_database
from api.settings import REPO_ROOT
from bench.identity_cipher import identity_cipher
from bench.tenancy import describe_machine, machine_table, percentile
from care.models import CareLevel, FamilyMember, Gender, Relationship, Resident
from compliance.encryption import RootKeyring, field_cipher
from tenants.db import asyncpg_dsn, close_database, open_database
from tenants.migrate import migrate_all
from tenants.registry import NewInstitution, get_or_create_region, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant

SECTION_BEGIN = "<!-- bench:search:begin -->"
SECTION_END = "<!-- bench:search:end -->"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁"
GIVEN = (
    "秀英",
    "桂兰",
    "玉梅",
    "淑珍",
    "建国",
    "国强",
    "志明",
    "德福",
    "春梅",
    "卫东",
    "振华",
    "兰英",
    "明",
    "芳",
)


def _id_card(rng: random.Random, birth: date, male: bool) -> str:
    first17 = f"{rng.choice(('330106', '110105', '440305'))}{birth:%Y%m%d}{rng.randrange(500) * 2 + male:03d}"
    return first17 + residents.id_card_check_character(first17)


def people(count: int, seed: int) -> list[tuple[residents.Identity, list[tuple[str, str]]]]:
    rng = random.Random(seed)
    found = []
    for _ in range(count):
        male = rng.random() < 0.4
        birth = date(1925, 1, 1) + timedelta(days=rng.randrange(40 * 365))
        identity = residents.Identity(
            name=rng.choice(SURNAMES) + rng.choice(GIVEN),
            gender=Gender.MALE if male else Gender.FEMALE,
            birth_date=birth,
            id_card_number=_id_card(rng, birth, male),
            phone=f"1{rng.choice('3589')}{rng.randrange(10**9):09d}" if rng.random() < 0.35 else None,
        )
        family = [
            (rng.choice(SURNAMES) + rng.choice(GIVEN), f"13{rng.randrange(10**9):09d}")
            for _ in range(rng.randint(1, 3))
        ]
        found.append((identity, family))
    return found


async def fill(
    population: list[tuple[residents.Identity, list[tuple[str, str]]]], keyring: RootKeyring | None = None
) -> None:
    """Bulk insert as care/demo.py does: ids first, every data key in one INSERT, sealed rows in bulk
    (under `keyring`'s root key if given: the unit of work's cipher is then made with it)."""
    cipher = await field_cipher(keyring=keyring)
    await cipher.ensure_data_keys(range(1, len(population) + 1))
    rows, members = [], []
    member_id = 0
    for pk, (identity, family) in enumerate(population, start=1):
        row = Resident(
            id=pk,
            care_level=list(CareLevel)[pk % 4],
            admission_date=date(2020, 1, 1) + timedelta(days=pk % 1500),
            building=f"{1 + pk // 200}号楼",
            room=f"{100 + pk % 100}",
            bed=str(pk),
        )
        await residents.seal_identity(cipher, row, identity)  # type: ignore[arg-type]
        row.discharge_note_enc = None
        rows.append(row)
        for name, phone in family:
            member_id += 1
            member = FamilyMember(id=member_id, resident_id=pk, relationship=Relationship.DAUGHTER)
            await residents.seal_family_member(cipher, member, name, phone)  # type: ignore[arg-type]
            members.append(member)
    await Resident.bulk_create(rows, batch_size=500)
    await FamilyMember.bulk_create(members, batch_size=500)
    await Resident._choose_db().execute_script(
        "SELECT setval(pg_get_serial_sequence('resident', 'id'), (SELECT max(id) FROM resident));"
        "SELECT setval(pg_get_serial_sequence('family_member', 'id'), (SELECT max(id) FROM family_member));"
    )


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await work()
    return time.perf_counter() - start


async def run(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, str], float]:
    async with scratch_database(args.database_url, "yiyang_bench_search") as url:
        await migrate_all(url)
        await open_database(url)
        try:
            await get_or_create_region("bench-east", "华东基准区")
            sealed = await provision_institution(NewInstitution(name="检索基准院", region_code="bench-east"))
            plain = await provision_institution(NewInstitution(name="检索对照院", region_code="bench-east"))
            population = people(args.residents, args.seed)
            start = time.perf_counter()
            await run_in_tenant(tenant_ref(sealed), lambda: fill(population))
            fill_seconds = time.perf_counter() - start
            with identity_cipher():
                await run_in_tenant(tenant_ref(plain), lambda: fill(population))
            rng = random.Random(args.seed)
            sealed_ref, plain_ref = tenant_ref(sealed), tenant_ref(plain)
            figures: dict[str, list[float]] = {
                key: [] for key in ("name", "id_card", "page", "page_identity")
            }

            def page(after: int) -> Callable[[], Awaitable[object]]:
                async def work() -> None:
                    rows = await residents.list_residents(
                        residents.ResidentFilter(), after_id=after, limit=50
                    )
                    assert len(rows) == 50

                return work

            for iteration in range(args.warm_up + args.iterations):
                identity, _ = rng.choice(population)
                fragment = identity.name[1:]  # the given name: a few dozen matches among 1,000

                async def by_name(fragment: str = fragment) -> None:
                    rows = await residents.list_residents(
                        residents.ResidentFilter(name_contains=fragment), after_id=None, limit=51
                    )
                    assert rows

                async def by_id_card(number: str = identity.id_card_number) -> None:
                    rows = await residents.list_residents(
                        residents.ResidentFilter(id_card_number=number), after_id=None, limit=51
                    )
                    assert rows and rows[0].identity.id_card_number == number

                after = rng.randrange(args.residents - 50)
                samples = {
                    "name": await timed(partial(run_in_tenant, sealed_ref, by_name)),
                    "id_card": await timed(partial(run_in_tenant, sealed_ref, by_id_card)),
                    "page": await timed(partial(run_in_tenant, sealed_ref, page(after))),
                }
                with identity_cipher():
                    samples["page_identity"] = await timed(partial(run_in_tenant, plain_ref, page(after)))
                if iteration >= args.warm_up:
                    for key, value in samples.items():
                        figures[key].append(value)
            admin = await asyncpg.connect(asyncpg_dsn(args.database_url))
            try:
                machine = await describe_machine(admin, args.database_url)
            finally:
                await admin.close()
        finally:
            await close_database()
    return figures, machine, fill_seconds


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def render(
    args: argparse.Namespace, figures: dict[str, list[float]], machine: dict[str, str], fill: float
) -> str:
    rows = (
        ("name", f"Name part (every name of {args.residents:,} decrypted in memory), first page of matches"),
        ("id_card", "Exact ID-card number (blind index in SQL), page decrypted"),
        (
            "page",
            "Page of 50 residents at a random cursor, encrypted (data keys in one query, fields decrypted)",
        ),
        ("page_identity", "The same page with the cipher replaced by the identity"),
    )
    p50 = {key: percentile(values, 50) for key, values in figures.items()}
    lines = [
        SECTION_BEGIN,
        f"## Search of encrypted residents ({args.residents:,} in one institution)",
        "",
        "`yiyang bench search` (bench/search.py): in-process, one unit of work per operation (its "
        "transaction, `SET search_path`, the queries, decryption), the operations interleaved; "
        f"{args.iterations} timed runs each after {args.warm_up} warm-up runs. Filling the institution "
        f"(ids, {args.residents:,} data keys in one INSERT, every field sealed, bulk insert) took "
        f"{fill:.2f} s.",
        "",
        "| operation | p50 | p95 |",
        "| --- | --- | --- |",
        *(f"| {label} | {ms(p50[key])} | {ms(percentile(figures[key], 95))} |" for key, label in rows),
        "",
        f"Encryption costs the page {ms(p50['page'] - p50['page_identity'])} at the median "
        f"({p50['page'] / p50['page_identity']:.2f}× the identity page).",
        "",
        *machine_table(machine),
        "",
        SECTION_END,
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str, *, begin: str = SECTION_BEGIN, end: str = SECTION_END) -> None:
    """Replace the section between the markers `begin` and `end` (appended when absent)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start, stop = text.find(begin), text.find(end)
    if start != -1 and stop != -1:
        text = text[:start] + section + text[stop + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yiyang bench search",
        description="Time name-part search, ID-card lookup and a page of 50 encrypted residents against the "
        "same page unencrypted; results go into a section of docs/benchmarks.md.",
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    parser.add_argument("--residents", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warm-up", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.residents < 51 or args.iterations < 1:
        sys.exit("--residents must be at least 51 and --iterations positive")
    figures, machine, fill_seconds = asyncio.run(run(args))
    section = render(args, figures, machine, fill_seconds)
    write_section(args.output, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
