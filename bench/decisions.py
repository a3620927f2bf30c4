"""`yiyang bench decisions`: what consent decisions and audit writes cost the 50-resident page (issue 5).

The same request as `yiyang bench page` (bench/page.py: 50 residents with identity, placement, family
members, latest vital signs and health record, through the whole application in-process), in one
institution sealed as the product writes, requested alternately at the same random cursor:
- as the product runs: the policy, then the decision point on every resident's every category (200
  decisions for a staff member's page: identity, relatives, vitals, health record), recorded as one
  audit event per resident read (50 rows) hashed into the tenant's chain and written with one INSERT at
  the end of the unit of work;
- with the decision point bypassed (`decision_point_bypassed`): the policy alone, no consent read, no
  event made or written.
A second pair does the same for an integrator's page (identity and relatives of 50 residents, under a
consent per resident naming its client: the consents are read, one query per page, and decided).
"""

import argparse
import asyncio
import os
import random
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from api.app import create_app
from api.services import scratch_database
from api.settings import REPO_ROOT, Settings
from bench.page import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    PAGE,
    PAGE_SIZE,
    _history,
    _Page,
    _token,
    timed,
)
from bench.search import fill, ms, people, write_section
from bench.tenancy import describe_machine, machine_table, percentile
from compliance import consent
from compliance.audit.events import AuditTrail
from compliance.identity.access_tokens import AccessTokenClaims, encode_access_token
from compliance.identity.clients import create_integrator_client
from compliance.identity.keys import signing_key
from compliance.principals import Principal, PrincipalKind
from tenants.db import asyncpg_dsn
from tenants.migrate import migrate_all
from tenants.registry import NewInstitution, get_or_create_region, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant

SECTION_BEGIN = "<!-- bench:decisions:begin -->"
SECTION_END = "<!-- bench:decisions:end -->"
STAFF, STAFF_BARE = "staff, decided and audited", "staff, policy only"
INTEGRATOR, INTEGRATOR_BARE = "integrator, decided and audited", "integrator, policy only"
INTEGRATOR_PAGE = """
query Page($after: String) { residents(first: 50, after: $after) { edges { node {
  id name gender birthDate age idCardNumber phone building room bed careLevel admissionDate status
  familyMembers { edges { node { name relationship phone isEmergencyContact } } }
} } } }"""


@contextmanager
def decision_point_bypassed() -> Iterator[None]:
    """Within the block, resident data is decided by the policy alone: no consent is read or decided and
    no audit event is made (what the page would cost without issue 5). Never used by the product."""
    import schema.resident_access as access
    import schema.residents as residents

    async def permit(*_: object, **__: object) -> consent.Decision:
        return access.BY_POLICY

    async def no_refusals(*_: object, **__: object) -> dict[int, object]:
        return {}

    def drop(self: AuditTrail, *_: object, **__: object) -> None:
        return None

    saved = (access.require_consent, residents.consent_refusals, AuditTrail.add, AuditTrail.decided)
    access.require_consent = permit  # type: ignore[assignment]
    residents.consent_refusals = no_refusals  # type: ignore[assignment]
    AuditTrail.add = AuditTrail.decided = drop  # type: ignore[method-assign]
    try:
        yield
    finally:
        access.require_consent, residents.consent_refusals, AuditTrail.add, AuditTrail.decided = saved  # type: ignore[assignment,method-assign]


def _integrator_token(issuer: str, institution_id: int, client_id: str, key: object) -> str:
    principal = Principal(
        subject=f"client:{client_id}",
        kind=PrincipalKind.INTEGRATOR,
        institution_id=institution_id,
        scopes=frozenset({"residents:read"}),
        client_id=client_id,
    )
    claims = AccessTokenClaims.for_principal(
        principal, issuer=issuer, client_id=client_id, scope=principal.scopes, lifetime_seconds=600
    )
    return encode_access_token(claims, key)  # type: ignore[arg-type]


async def _consents(resident_ids: Sequence[int], client_id: str) -> None:
    """A consent per resident naming the integrator's client for identity (third-party integration)."""
    for resident_id in resident_ids:
        await consent.record_consent(
            consent.NewConsent(
                resident_id=resident_id,
                grantor=consent.Grantor(consent.GrantorKind.RESIDENT, None, consent.Authority.SELF),
                grantee=consent.Grantee(consent.GranteeKind.INTEGRATOR, None, client_id, None),
                purposes=frozenset({consent.Purpose.THIRD_PARTY_INTEGRATION}),
                categories=frozenset({consent.Category.IDENTITY}),
                notice_version="bench-v1",
                notice_sha256="ab" * 32,
                method=consent.RecordingMethod.IN_APP_CONFIRMATION,
                period_start=datetime(2026, 1, 1, tzinfo=UTC),
            ),
            recorded_by="account:1",
        )


class _Query(_Page):
    """A page of another query than bench/page.py's (the integrator's)."""

    def __init__(self, http: httpx.AsyncClient, token: str, query: str, bypass: bool) -> None:
        super().__init__(http, token, decision_point_bypassed if bypass else nullcontext)
        self.query = query

    def at(self, after: str | None):  # type: ignore[no-untyped-def]
        async def request() -> None:
            with self.cipher():
                data = await self._post(self.query, {"after": after})
            if len(data["residents"]["edges"]) != PAGE_SIZE:
                raise RuntimeError("a short page")

        return request


async def run(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, str], int]:
    async with scratch_database(args.database_url, "yiyang_bench_decisions") as url:
        await migrate_all(url)
        settings = Settings(
            database_url=url,
            redis_url=args.redis_url,
            environment="test",
            redis_namespace=f"bench-decisions-{uuid.uuid4().hex[:8]}",
            rate_limit_user_per_minute=10**9,
            rate_limit_client_per_minute=10**9,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            await get_or_create_region("bench-east", "华东基准区")
            home = await provision_institution(NewInstitution(name="决策基准院", region_code="bench-east"))
            residents = range(1, args.residents + 1)
            await run_in_tenant(tenant_ref(home), lambda: fill(people(args.residents, args.seed)))
            await run_in_tenant(tenant_ref(home), lambda: _history(residents, args.seed))
            created = await create_integrator_client(
                "基准对接", scopes=["residents:read"], created_by="bench", institution_id=home.id
            )
            client_id = created.client.client_id
            await run_in_tenant(tenant_ref(home), lambda: _consents(list(residents), client_id))
            key = await signing_key()
            staff = _token(settings.issuer, home.id, key)
            integrator = _integrator_token(settings.issuer, home.id, client_id, key)
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://bench.yiyang.test") as http:
                pages = {
                    STAFF: _Query(http, staff, PAGE, bypass=False),
                    STAFF_BARE: _Query(http, staff, PAGE, bypass=True),
                    INTEGRATOR: _Query(http, integrator, INTEGRATOR_PAGE, bypass=False),
                    INTEGRATOR_BARE: _Query(http, integrator, INTEGRATOR_PAGE, bypass=True),
                }
                for page in pages.values():
                    await page.prepare(args.residents)
                rng = random.Random(args.seed)
                figures: dict[str, list[float]] = {name: [] for name in pages}
                for iteration in range(args.warm_up + args.iterations):
                    index = rng.randrange(len(pages[STAFF_BARE].cursors))
                    for pair in (list(pages.items())[:2], list(pages.items())[2:]):
                        rng.shuffle(pair)  # neither always first
                        for name, page in pair:
                            seconds = await timed(page.at(page.cursors[index]))
                            if iteration >= args.warm_up:
                                figures[name].append(seconds)

                async def events() -> int:
                    from tenants.db import default_connection

                    _, rows = await default_connection().execute_query(
                        "SELECT count(*) AS n FROM audit_event"
                    )
                    return int(rows[0]["n"])

                written = await run_in_tenant(tenant_ref(home), events)
        admin = await asyncpg.connect(asyncpg_dsn(args.database_url))
        try:
            machine = await describe_machine(admin, args.database_url)
        finally:
            await admin.close()
    return figures, machine, written


def _paired(figures: dict[str, list[float]], audited: str, bare: str) -> float:
    """The median of the pairs' ratios (each pair ran back to back at the same cursor)."""
    return percentile([a / b for a, b in zip(figures[audited], figures[bare], strict=True)], 50)


def render(
    args: argparse.Namespace, figures: dict[str, list[float]], machine: dict[str, str], written: int
) -> str:
    p50 = {name: percentile(values, 50) for name, values in figures.items()}
    p95 = {name: percentile(values, 95) for name, values in figures.items()}
    staff = _paired(figures, STAFF, STAFF_BARE)
    integrator = _paired(figures, INTEGRATOR, INTEGRATOR_BARE)
    lines = [
        SECTION_BEGIN,
        "## Consent decisions and audit writes on the 50-resident page (issue 5)",
        "",
        "`yiyang bench decisions` (bench/decisions.py): the page of `yiyang bench page` (50 residents with "
        "identity, placement, family members, latest vital signs and health record, through the whole "
        f"application in-process) in one institution of {args.residents:,} sealed residents, as the product "
        "runs it (the policy, then the decision point on each resident's each category — 200 decisions — "
        "recorded as one audit event per resident read, 50 rows hashed into the tenant's chain and written "
        "with one INSERT at the end of the unit of work) and with the decision point bypassed (the policy "
        "alone: no consent read, no event). "
        "An integrator's page (identity and relatives of 50 residents, each under a consent naming its "
        "client: consents read with one query per page and decided) is measured the same way. Each pair "
        f"requested back to back at the same random cursor, {args.iterations} timed pairs after "
        f"{args.warm_up} warm-up pairs; {written:,} events were written in all.",
        "",
        "| page | p50 | p95 |",
        "| --- | --- | --- |",
        *(f"| {name} | {ms(p50[name])} | {ms(p95[name])} |" for name in figures),
        "",
        f"Consent decisions and audit writes cost the staff page **{(staff - 1) * 100:.1f}%** and the "
        f"integrator's page **{(integrator - 1) * 100:.1f}%** (medians of the pairs' ratios; goal: at most "
        "20%, for the 50-resident page of issue 4, the staff page). In milliseconds: "
        f"{ms(p50[STAFF] - p50[STAFF_BARE])} and {ms(p50[INTEGRATOR] - p50[INTEGRATOR_BARE])} at the "
        "median. The integrator's page reads the same 50 residents with a third of the work (integrators "
        "have no grant for vitals or the health record) while its audit costs about as much per resident "
        "(50 events, and one consent query the staff page does not need), so the same milliseconds weigh "
        "more: the figure is shown as measured, not as a goal met.",
        "",
        *machine_table(machine),
        "",
        SECTION_END,
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yiyang bench decisions",
        description="Time the 50-resident page with consent decisions and audit writes against the same "
        "page decided by the policy alone; results go into docs/benchmarks.md.",
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    parser.add_argument("--residents", type=int, default=200)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--warm-up", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.residents < PAGE_SIZE or args.iterations < 1:
        sys.exit(f"--residents must be at least {PAGE_SIZE} and --iterations positive")
    figures, machine, written = asyncio.run(run(args))
    section = render(args, figures, machine, written)
    write_section(args.output, section, begin=SECTION_BEGIN, end=SECTION_END)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
