"""The `yiyang` command: run, worker, migrate, tenants, seed, token, bench."""

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from api.settings import REPO_ROOT, ConfigurationError, Settings


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("DATABASE_URL is not set (`yiyang run` starts an embedded PostgreSQL and sets it)")
    return url


async def _with_database(work: Callable[[], Awaitable[int]]) -> int:
    from tenants.db import close_database, open_database

    await open_database(_database_url())
    try:
        return await work()
    finally:
        await close_database()


def _cmd_run(args: argparse.Namespace) -> int:
    from api.launcher import run_product

    return run_product(host=args.host, port=args.port, data_dir=Path(args.data_dir))


def _cmd_serve(args: argparse.Namespace) -> int:
    from api.serve import serve

    return serve(args.host, args.port, args.workers)


def _cmd_worker(args: argparse.Namespace) -> int:
    from arq.worker import run_worker

    from workers.settings import WorkerSettings

    run_worker(WorkerSettings)  # type: ignore[arg-type]
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from tenants.migrate import MigrationFailed, migrate_all

    try:
        report = asyncio.run(migrate_all(_database_url(), concurrency=args.concurrency))
    except MigrationFailed as failed:
        print(f"migration failed: {failed}", file=sys.stderr)
        return 1
    print(
        f"shared migrations applied: {report.shared_applied or 'none'}; "
        f"tenant schemas: {report.schemas_total}, "
        f"migrated: {report.schemas_migrated}, migrations applied: {report.migrations_applied}"
    )
    return 0


def _cmd_tenants_create(args: argparse.Namespace) -> int:
    from tenants.errors import ValidationFailed
    from tenants.registry import NewInstitution, provision_institution

    async def create() -> int:
        try:
            institution = await provision_institution(
                NewInstitution(
                    name=args.name,
                    region_code=args.region,
                    chain_name=args.chain,
                    time_zone=args.time_zone,
                    currency=args.currency,
                    bed_capacity=args.beds,
                )
            )
        except ValidationFailed as invalid:
            for problem in invalid.problems:
                print(f"{problem.field}: {problem}", file=sys.stderr)
            return 2
        print(f"{institution.id}\t{institution.schema_name}\t{institution.name}")
        return 0

    return asyncio.run(_with_database(create))


def _cmd_clients_create(args: argparse.Namespace) -> int:
    from compliance.identity.clients import create_integrator_client
    from tenants.errors import InvalidInput, NotFound

    async def create() -> int:
        try:
            created = await create_integrator_client(
                args.name,
                scopes=args.scope,
                created_by=f"cli:{os.environ.get('USER', 'operator')}",
                institution_id=args.institution,
                chain_id=args.chain,
            )
        except (InvalidInput, NotFound) as problem:
            print(f"{problem.field or 'client'}: {problem}", file=sys.stderr)
            return 2
        # The secret is printed once and stored nowhere but as a hash: hand it over now.
        print(f"client_id\t{created.client.client_id}\nclient_secret\t{created.client_secret}")
        return 0

    return asyncio.run(_with_database(create))


def _cmd_clients_revoke(args: argparse.Namespace) -> int:
    from compliance.identity.clients import revoke_client
    from tenants.errors import NotFound

    async def revoke() -> int:
        try:
            await revoke_client(args.client_id)
        except NotFound:
            print(f"no client {args.client_id}", file=sys.stderr)
            return 2
        return 0

    return asyncio.run(_with_database(revoke))


def _cmd_tenants_list(args: argparse.Namespace) -> int:
    from tenants.models import Institution

    async def listing() -> int:
        for row in await Institution.all().select_related("region", "chain").order_by("id"):
            chain = row.chain.name if row.chain else "-"
            print(f"{row.id}\t{row.schema_name}\t{row.status}\t{row.region.code}\t{chain}\t{row.name}")
        return 0

    return asyncio.run(_with_database(listing))


def _cmd_seed(args: argparse.Namespace) -> int:
    from care.demo import seed_demo_data

    report = asyncio.run(seed_demo_data(_database_url()))
    if report.skipped:
        print("the registry already holds institutions: demo data not loaded")
    else:
        print(
            f"demo data: {report.chains} chains, {report.institutions} institutions, "
            f"{report.residents} residents, {report.family_members} family members"
        )
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    from api.dev_tokens import issue_dev_token
    from compliance.principals import Principal, PrincipalKind, StaffRole

    settings = Settings.from_environ({"DATABASE_URL": "-", "REDIS_URL": "-", **os.environ})
    if not settings.development:
        sys.exit("development tokens are not issued in production")
    if args.operator:
        principal = Principal(subject=args.subject or "operator", kind=PrincipalKind.OPERATOR)
    else:
        if args.institution is None:
            sys.exit("give --institution ID (see `yiyang tenants list`) or --operator")
        principal = Principal(
            subject=args.subject or f"staff-{args.institution}",
            kind=PrincipalKind.STAFF,
            institution_id=args.institution,
            roles=frozenset(StaffRole(role) for role in args.role),
        )
    print(issue_dev_token(settings.token_secret, principal, ttl_seconds=args.ttl))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from bench.tenancy import main as bench_tenancy

    return bench_tenancy(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yiyang", description="Yiyang (颐养) elder-care platform")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run the whole product: servers, migrations, demo data, API, worker"
    )
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--data-dir", default=str(REPO_ROOT / "var"))
    run.set_defaults(handler=_cmd_run)

    serve = commands.add_parser("serve", help="serve the API (DATABASE_URL and REDIS_URL name the servers)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers", type=int, help="API processes (default: YIYANG_API_WORKERS, else one per usable core)"
    )
    serve.set_defaults(handler=_cmd_serve)

    commands.add_parser("worker", help="run an arq worker").set_defaults(handler=_cmd_worker)

    migrate = commands.add_parser("migrate", help="migrate the shared schema and every tenant schema")
    migrate.add_argument("--concurrency", type=int, default=8)
    migrate.set_defaults(handler=_cmd_migrate)

    tenants = commands.add_parser("tenants", help="the institution registry").add_subparsers(
        dest="tenants_command", required=True
    )
    create = tenants.add_parser("create", help="register an institution and create its schema")
    create.add_argument("--name", required=True)
    create.add_argument("--region", required=True, help="region code, e.g. east")
    create.add_argument("--chain", default=None)
    create.add_argument("--time-zone", default="Asia/Shanghai")
    create.add_argument("--currency", default="CNY")
    create.add_argument("--beds", type=int, default=0)
    create.set_defaults(handler=_cmd_tenants_create)
    tenants.add_parser("list", help="list institutions").set_defaults(handler=_cmd_tenants_list)

    clients = commands.add_parser("clients", help="integrator clients (OAuth2)").add_subparsers(required=True)
    new_client = clients.add_parser("create", help="create a client; prints its secret once")
    new_client.add_argument("--name", required=True)
    bound = new_client.add_mutually_exclusive_group(required=True)
    bound.add_argument("--institution", type=int, help="institution id the client acts for")
    bound.add_argument("--chain", type=int, help="chain id the client acts for")
    new_client.add_argument("--scope", action="append", required=True, help="repeatable, e.g. residents:read")
    new_client.set_defaults(handler=_cmd_clients_create)
    revoke = clients.add_parser("revoke", help="stop a client from getting tokens")
    revoke.add_argument("client_id")
    revoke.set_defaults(handler=_cmd_clients_revoke)

    commands.add_parser("seed", help="load the demo data (once)").set_defaults(handler=_cmd_seed)

    token = commands.add_parser("token", help="print a development access token")
    token.add_argument("--institution", type=int)
    token.add_argument("--operator", action="store_true")
    token.add_argument("--role", action="append", default=None, choices=[r.value for r in _roles()])
    token.add_argument("--subject")
    token.add_argument("--ttl", type=int, default=8 * 3600)
    token.set_defaults(handler=_cmd_token)

    bench = commands.add_parser("bench", help="benchmarks; `yiyang bench tenancy --help`")
    bench.add_argument("suite", choices=["tenancy"])
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=_cmd_bench)
    return parser


def _roles() -> list:
    from compliance.principals import StaffRole

    return list(StaffRole)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "role", ()) is None:
        args.role = ["institution_admin"]
    try:
        return args.handler(args)
    except ConfigurationError as problem:
        print(f"configuration: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
