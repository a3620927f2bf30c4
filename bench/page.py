"""`yiyang bench page`: what field-level encryption costs the page staff open most, measured in-process.

The page is a GraphQL request for 50 residents with their identity, placement, family members, latest
vital signs and health record (diagnoses, medications, allergies): the request of issue 4's "page of 50
residents", through the whole application (token verification, acting institution, rate limit, one
unit of work, DataLoaders, decryption, serialization), sent with httpx to the ASGI app in this process.

In a scratch database (dropped afterwards) two institutions are filled alike: the first as the product
writes (every field sealed), the second with the cipher replaced by the identity (bench/identity_cipher.py:
the same code and SQL, plaintext bytes in the sealed columns, no key reads, no AEAD). Then the two pages
are requested alternately at random cursors, so that both meet the same machine, and p50/p95 with the
machine go into a section of docs/benchmarks.md.
"""

import argparse
import asyncio
import cProfile
import os
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

from api.app import create_app
from api.services import scratch_database
from api.settings import REPO_ROOT, Settings
from bench.identity_cipher import identity_cipher
from bench.search import fill, ms, people, write_section
from bench.tenancy import describe_machine, machine_table, percentile
from care import health_record, vitals
from compliance.identity.access_tokens import AccessTokenClaims, encode_access_token
from compliance.identity.keys import signing_key
from compliance.principals import Principal, PrincipalKind, StaffRole
from tenants.db import asyncpg_dsn
from tenants.migrate import migrate_all
from tenants.registry import NewInstitution, get_or_create_region, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant

SECTION_BEGIN = "<!-- bench:page:begin -->"
SECTION_END = "<!-- bench:page:end -->"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PAGE_SIZE = 50
PAGE = """
query Page($after: String) { residents(first: 50, after: $after) { edges { node {
  id name gender birthDate age idCardNumber phone building room bed careLevel admissionDate status
  familyMembers { edges { node { name relationship phone isEmergencyContact } } }
  latestVitals { measure value diastolic unit flag measuredAt }
  healthRecord {
    diagnoses { condition icd10 diagnosedOn }
    medications { drug doseAmount doseUnit route frequency current }
    allergies { substance severity }
  }
} } } }"""
CURSORS = "query($after: String) { residents(first: 100, after: $after) { edges { cursor } } }"
DIAGNOSES = (("高血压", "I10"), ("2型糖尿病", "E11.9"), ("冠心病", "I25.1"), ("阿尔茨海默病", "G30.9"))
DRUGS = ("苯磺酸氨氯地平片", "二甲双胍缓释片", "阿司匹林肠溶片", "阿托伐他汀钙片", "多奈哌齐片")


async def _history(resident_ids: range, seed: int) -> None:
    """Vitals (each measure twice) and a health record for every resident, through the domain."""
    rng = random.Random(seed)
    nurse = vitals.Recorder("account:1", vitals.Source.STAFF)
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    for resident in resident_ids:
        for day in range(2):
            at = start + timedelta(days=day, minutes=rng.randrange(600))
            for measure, value in (
                (vitals.Measure.HEART_RATE, Decimal(rng.randint(58, 96))),
                (vitals.Measure.TEMPERATURE, Decimal(rng.choice(("36.4", "36.7", "37.1")))),
                (vitals.Measure.SPO2, Decimal(rng.randint(93, 99))),
                (vitals.Measure.WEIGHT, Decimal(rng.randint(42, 78))),
            ):
                await vitals.record_reading(
                    resident, vitals.NewReading(measure, value, measured_at=at), nurse
                )
            await vitals.record_reading(
                resident,
                vitals.NewReading(
                    vitals.Measure.BLOOD_PRESSURE,
                    systolic=Decimal(rng.randint(110, 165)),
                    diastolic=Decimal(rng.randint(65, 95)),
                    measured_at=at,
                ),
                nurse,
            )
            await vitals.record_reading(
                resident,
                vitals.NewReading(
                    vitals.Measure.GLUCOSE,
                    Decimal(rng.choice(("5.4", "6.8", "8.2"))),
                    context=vitals.GlucoseContext.FASTING,
                    measured_at=at,
                ),
                nurse,
            )
        condition, icd10 = rng.choice(DIAGNOSES)
        await health_record.add_diagnosis(
            resident,
            health_record.NewDiagnosis(condition, icd10, diagnosed_on=date(2019, 5, 1)),
            recorded_by="account:1",
            today=date(2026, 11, 1),
        )
        for drug in rng.sample(DRUGS, 2):
            await health_record.add_medication(
                resident,
                health_record.NewMedication(
                    drug,
                    Decimal(rng.choice((5, 10, 20))),
                    health_record.DoseUnit.MG,
                    health_record.Route.ORAL,
                    health_record.Frequency.ONCE_DAILY,
                    date(2025, 3, 1),
                ),
                recorded_by="account:1",
            )
        if rng.random() < 0.3:
            await health_record.add_allergy(
                resident,
                health_record.NewAllergy("青霉素", health_record.AllergySeverity.SEVERE, "皮疹"),
                recorded_by="account:1",
            )


def _token(issuer: str, institution_id: int, key: object) -> str:
    principal = Principal(
        subject=f"account:{institution_id}",
        kind=PrincipalKind.STAFF,
        institution_id=institution_id,
        roles=frozenset({StaffRole.HEAD_NURSE}),
    )
    claims = AccessTokenClaims.for_principal(
        principal, issuer=issuer, client_id="yiyang-bench", lifetime_seconds=600
    )
    return encode_access_token(claims, key)  # type: ignore[arg-type]


class _Page:
    """One institution's page: its token, the cursors to start from, the cipher it runs under."""

    def __init__(
        self, http: httpx.AsyncClient, token: str, cipher: Callable[[], AbstractContextManager[None]]
    ) -> None:
        self.http, self.cipher = http, cipher
        self.headers = {"authorization": f"Bearer {token}"}
        self.cursors: list[str | None] = []

    async def _post(self, query: str, variables: dict[str, object]) -> dict:
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=self.headers
        )
        answer = response.json()
        if response.status_code != 200 or answer.get("errors"):
            raise RuntimeError(f"the page failed: {response.status_code} {answer}")
        return answer["data"]

    async def prepare(self, residents: int) -> None:
        cursors: list[str] = []
        while len(cursors) < residents:
            with self.cipher():
                data = await self._post(CURSORS, {"after": cursors[-1] if cursors else None})
            cursors += [edge["cursor"] for edge in data["residents"]["edges"]]
        self.cursors = [None, *cursors[: residents - PAGE_SIZE]]

    def at(self, after: str | None) -> Callable[[], Awaitable[object]]:
        async def request() -> None:
            with self.cipher():
                data = await self._post(PAGE, {"after": after})
            if len(data["residents"]["edges"]) != PAGE_SIZE:
                raise RuntimeError("a short page")

        return request


async def _profile(pages: dict[str, "_Page"], path: Path) -> None:
    """cProfile of 50 requests of each page, written to `path`.<page> (read with pstats)."""
    for name, page in pages.items():
        profiler = cProfile.Profile()
        profiler.enable()
        for index in range(50):
            await page.at(page.cursors[index % len(page.cursors)])()
        profiler.disable()
        profiler.dump_stats(f"{path}.{name}")


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await work()
    return time.perf_counter() - start


async def run(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, str], float]:
    async with scratch_database(args.database_url, "yiyang_bench_page") as url:
        await migrate_all(url)
        settings = Settings(
            database_url=url,
            redis_url=args.redis_url,
            environment="test",
            redis_namespace=f"bench-page-{uuid.uuid4().hex[:8]}",
            rate_limit_user_per_minute=10**9,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            await get_or_create_region("bench-east", "华东基准区")
            sealed = await provision_institution(NewInstitution(name="页面基准院", region_code="bench-east"))
            plain = await provision_institution(NewInstitution(name="页面对照院", region_code="bench-east"))
            population = people(args.residents, args.seed)
            residents = range(1, args.residents + 1)
            start = time.perf_counter()
            await run_in_tenant(tenant_ref(sealed), lambda: fill(population))
            await run_in_tenant(tenant_ref(sealed), lambda: _history(residents, args.seed))
            fill_seconds = time.perf_counter() - start
            with identity_cipher():
                await run_in_tenant(tenant_ref(plain), lambda: fill(population))
                await run_in_tenant(tenant_ref(plain), lambda: _history(residents, args.seed))
            key = await signing_key()
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://bench.yiyang.test") as http:
                pages = {
                    "encrypted": _Page(http, _token(settings.issuer, sealed.id, key), nullcontext),
                    "identity": _Page(http, _token(settings.issuer, plain.id, key), identity_cipher),
                }
                for page in pages.values():
                    await page.prepare(args.residents)
                rng = random.Random(args.seed)
                if args.profile:
                    await _profile(pages, args.profile)
                figures: dict[str, list[float]] = {name: [] for name in pages}
                for iteration in range(args.warm_up + args.iterations):
                    index = rng.randrange(len(pages["encrypted"].cursors))
                    order = list(pages.items())
                    rng.shuffle(order)  # neither always first
                    for name, page in order:
                        seconds = await timed(page.at(page.cursors[index]))
                        if iteration >= args.warm_up:
                            figures[name].append(seconds)
        admin = await asyncpg.connect(asyncpg_dsn(args.database_url))
        try:
            machine = await describe_machine(admin, args.database_url)
        finally:
            await admin.close()
    return figures, machine, fill_seconds


def render(
    args: argparse.Namespace, figures: dict[str, list[float]], machine: dict[str, str], fill: float
) -> str:
    p50 = {name: percentile(values, 50) for name, values in figures.items()}
    p95 = {name: percentile(values, 95) for name, values in figures.items()}
    ratio = p50["encrypted"] / p50["identity"]
    # Each pair ran back to back at the same cursor: the median of the pairs' ratios is the figure least
    # moved by what else the machine did meanwhile (the two medians are shown too).
    paired = percentile([e / i for e, i in zip(figures["encrypted"], figures["identity"], strict=True)], 50)
    lines = [
        SECTION_BEGIN,
        "## The 50-resident page, encrypted and not (issue 4)",
        "",
        "`yiyang bench page` (bench/page.py): the GraphQL request for 50 residents with identity, placement, "
        "family members, latest vital signs and health record, through the whole application in-process "
        "(httpx to the ASGI app: token, acting institution, rate limit, unit of work, DataLoaders, "
        f"decryption, JSON). Two institutions of {args.residents:,} residents filled alike (each resident "
        "1–3 family members, 12 vital-sign readings, a diagnosis, two medications, sometimes an allergy), "
        "one sealed as the product writes, one with the cipher replaced by the identity; the two pages "
        f"requested alternately at the same random cursor, {args.iterations} timed pairs after "
        f"{args.warm_up} warm-up pairs. Filling the sealed institution through the domain took {fill:.1f} s.",
        "",
        "| page | p50 | p95 |",
        "| --- | --- | --- |",
        f"| encrypted (as the product runs) | {ms(p50['encrypted'])} | {ms(p95['encrypted'])} |",
        f"| cipher replaced by the identity | {ms(p50['identity'])} | {ms(p95['identity'])} |",
        "",
        f"Encryption costs the page {(paired - 1) * 100:.1f}% (the median of the {args.iterations} pairs' "
        f"ratios; goal: at most 15%); the medians differ by {ms(p50['encrypted'] - p50['identity'])} "
        f"({(ratio - 1) * 100:.1f}%).",
        "",
        *machine_table(machine),
        "",
        SECTION_END,
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yiyang bench page",
        description="Time the GraphQL page of 50 residents (families, latest vitals, health record) "
        "encrypted against the same page with the identity cipher; results go into docs/benchmarks.md.",
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    parser.add_argument("--residents", type=int, default=200)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--warm-up", type=int, default=20)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--profile", type=Path, help="also write cProfile stats of each page to PROFILE.<page>"
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.residents < PAGE_SIZE or args.iterations < 1:
        sys.exit(f"--residents must be at least {PAGE_SIZE} and --iterations positive")
    figures, machine, fill_seconds = asyncio.run(run(args))
    section = render(args, figures, machine, fill_seconds)
    write_section(args.output, section, begin=SECTION_BEGIN, end=SECTION_END)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
