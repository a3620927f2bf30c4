"""The `yiyang` command: run, worker, migrate, tenants, clients, keys, seed, token, audit, bench."""

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from api.settings import REPO_ROOT, ConfigurationError, Settings
from tenants.db import ApplicationRoleUnavailable

CLI_CLIENT_ID = "yiyang-cli"  # the client_id of tokens printed by `yiyang token`


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
    from workers.runner import main as run_workers

    return run_workers(args.queue or ["short", "long"])


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


def _cmd_clients_create_public(args: argparse.Namespace) -> int:
    from compliance.identity.authorization import create_public_client
    from tenants.errors import Conflict, InvalidInput

    async def create() -> int:
        try:
            client = await create_public_client(
                args.name,
                redirect_uris=args.redirect_uri,
                created_by=f"cli:{os.environ.get('USER', 'operator')}",
                client_id=args.client_id,
            )
        except (InvalidInput, Conflict) as problem:
            print(f"{problem.field or 'client'}: {problem}", file=sys.stderr)
            return 2
        # A public client has no secret: the client_id and the exact redirect URIs are all it needs.
        print(f"client_id\t{client.client_id}")
        for uri in client.redirect_uris:
            print(f"redirect_uri\t{uri}")
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


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Field-encryption keys: `--root` re-wraps every tenant key under YIYANG_ROOT_KEY_NEW; `--institution`
    makes a new tenant-key version and re-wraps that institution's data keys (docs/security.md)."""
    from compliance.encryption import Algorithm, FieldEncryptionError, root_keyring_from_environ
    from compliance.encryption.keys import ROOT_KEY_NEW_VARIABLE
    from compliance.encryption.rotation import rotate_root_key, rotate_tenant_key, tenant_keys_not_under
    from compliance.identity.keys import RootKeyError
    from tenants.errors import NotFound

    try:
        keyring = root_keyring_from_environ()
    except RootKeyError as problem:
        print(f"root key: {problem}", file=sys.stderr)
        return 2
    if args.root and not keyring.previous:
        print(f"set {ROOT_KEY_NEW_VARIABLE} (the new root key) alongside YIYANG_ROOT_KEY", file=sys.stderr)
        return 2

    async def rotate() -> int:
        try:
            if args.root:
                done = await rotate_root_key(keyring, batch_size=args.batch_size)
                left = await tenant_keys_not_under(done.root_key_id)
                print(
                    f"tenant keys re-wrapped under root key {done.root_key_id}: {done.tenant_keys_rewrapped}"
                )
                print(f"signing keys re-sealed: {done.signing_keys_resealed}")
                print(f"TOTP secrets re-sealed: {done.totp_secrets_resealed}")
                print(f"audit checkpoint keys re-sealed: {done.audit_keys_resealed}")
                print(f"tenant keys under another root key: {left}")
                return 0 if left == 0 else 1
            algorithm = Algorithm.from_label(args.algorithm) if args.algorithm else None
            rotation = await rotate_tenant_key(
                args.institution, algorithm=algorithm, keyring=keyring, batch_size=args.batch_size
            )
        except NotFound:
            print(f"no institution {args.institution}", file=sys.stderr)
            return 2
        except FieldEncryptionError as problem:
            print(f"keys: {problem}", file=sys.stderr)
            return 1
        print(
            f"institution {rotation.institution_id}: tenant key version {rotation.new_version}"
            f" ({rotation.algorithm.label}), data keys re-wrapped: {rotation.data_keys_rewrapped},"
            f" versions retired: {rotation.versions_retired or 'none'}"
            + (" (superseded by a later rotation)" if rotation.superseded else "")
        )
        return 0

    return asyncio.run(_with_database(rotate))


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
    from care.demo_accounts import DEMO_PASSWORD

    report = asyncio.run(seed_demo_data(_database_url()))
    if report.skipped:
        print("the registry already holds institutions: demo data not loaded")
    else:
        print(
            f"demo data: {report.chains} chains, {report.institutions} institutions, "
            f"{report.residents} residents, {report.family_members} family members, "
            f"{report.accounts} accounts (password {DEMO_PASSWORD!r}: see README, Demo accounts)"
        )
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    """A development convenience: an access token for a (demo) account, to try the API by hand."""
    from compliance.identity.access_tokens import issue_access_token
    from compliance.identity.account_models import UserAccount
    from compliance.identity.accounts import normalize_login, principal_for
    from tenants.errors import DomainError

    settings = Settings.from_environ({"DATABASE_URL": "-", "REDIS_URL": "-", **os.environ})
    if not settings.development:
        sys.exit("tokens are not printed in production: sign in at /oauth/authorize")

    async def issue() -> int:
        account = await UserAccount.get_or_none(login=normalize_login(args.login) or "")
        if account is None:
            print(f"login: no account {args.login!r}", file=sys.stderr)
            return 2
        try:
            principal = await principal_for(account, args.institution)
        except DomainError as problem:
            print(f"{problem.field or 'login'}: {problem}", file=sys.stderr)
            return 2
        print(
            await issue_access_token(
                principal, issuer=settings.issuer, client_id=CLI_CLIENT_ID, lifetime_seconds=600
            )
        )
        return 0

    return asyncio.run(_with_database(issue))


def _cmd_audit(args: argparse.Namespace) -> int:
    from compliance.audit.checkpoints import checkpoint
    from compliance.audit.verify import institutions, verify_tenants

    async def audit() -> int:
        tenants = await institutions(args.institution)
        if args.institution is not None and not tenants:
            print(f"no institution {args.institution}", file=sys.stderr)
            return 2
        if args.action == "checkpoint":
            for tenant in tenants:
                point = await checkpoint(tenant)
                signed = f"checkpoint at seq {point.seq}" if point else "no events"
                print(f"institution {tenant.institution_id}: {signed}")
            return 0
        reports = await verify_tenants(tenants)
        for report in reports:
            print("\n".join(report.lines()))
        return 0 if all(report.intact for report in reports) else 1

    return asyncio.run(_with_database(audit))


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.suite == "audit":
        from bench.audit import main as bench_audit

        return bench_audit(args.rest)
    if args.suite == "decisions":
        from bench.decisions import main as bench_decisions

        return bench_decisions(args.rest)
    if args.suite == "sweep":
        from bench.sweep import main as bench_sweep

        return bench_sweep(args.rest)
    if args.suite == "page":
        from bench.page import main as bench_page

        return bench_page(args.rest)
    if args.suite == "search":
        from bench.search import main as bench_search

        return bench_search(args.rest)
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

    worker = commands.add_parser("worker", help="run the arq workers of both queues (short, long)")
    worker.add_argument(
        "--queue", action="append", choices=["short", "long"], help="repeatable; default: both queues"
    )
    worker.set_defaults(handler=_cmd_worker)

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

    clients = commands.add_parser(
        "clients", help="OAuth2 clients: integrators and public apps"
    ).add_subparsers(required=True)
    new_client = clients.add_parser("create", help="create a client; prints its secret once")
    new_client.add_argument("--name", required=True)
    bound = new_client.add_mutually_exclusive_group(required=True)
    bound.add_argument("--institution", type=int, help="institution id the client acts for")
    bound.add_argument("--chain", type=int, help="chain id the client acts for")
    new_client.add_argument(
        "--scope",
        action="append",
        required=True,
        help="repeatable: residents:read, residents:write, vitals:write, webhooks:manage",
    )
    new_client.set_defaults(handler=_cmd_clients_create)
    public = clients.add_parser(
        "create-public", help="create a public first-party client (authorization code with PKCE, no secret)"
    )
    public.add_argument("--name", required=True)
    public.add_argument(
        "--redirect-uri",
        action="append",
        required=True,
        help="repeatable; compared exactly, https or loopback",
    )
    public.add_argument("--client-id", help="16-64 letters, digits, - or _ (default: random)")
    public.set_defaults(handler=_cmd_clients_create_public)
    revoke = clients.add_parser("revoke", help="stop a client from getting tokens")
    revoke.add_argument("client_id")
    revoke.set_defaults(handler=_cmd_clients_revoke)

    keys = commands.add_parser("keys", help="field-encryption keys").add_subparsers(required=True)
    rotate = keys.add_parser(
        "rotate", help="rotate the root key (--root) or an institution's tenant key (--institution ID)"
    )
    which = rotate.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--root", action="store_true", help="re-wrap every tenant key under YIYANG_ROOT_KEY_NEW"
    )
    which.add_argument("--institution", type=int, help="new tenant-key version of this institution")
    rotate.add_argument(
        "--algorithm",
        choices=["aes-256-gcm", "sm4-gcm"],
        help="with --institution: algorithm of the new version",
    )
    rotate.add_argument("--batch-size", type=int, default=500, help="keys re-wrapped per transaction")
    rotate.set_defaults(handler=_cmd_keys_rotate)

    commands.add_parser("seed", help="load the demo data (once)").set_defaults(handler=_cmd_seed)

    token = commands.add_parser(
        "token", help="print a 10-minute access token for an account (development only)"
    )
    token.add_argument("--login", required=True, help="the account's e-mail address or mobile number")
    token.add_argument("--institution", type=int, help="where a staff account acts (if several)")
    token.set_defaults(handler=_cmd_token)

    audit = commands.add_parser("audit", help="the audit log: verify its chains, sign checkpoints")
    audit.add_argument("action", choices=["verify", "checkpoint"])
    audit.add_argument("--institution", type=int, help="this institution only (default: all)")
    audit.set_defaults(handler=_cmd_audit)

    bench = commands.add_parser("bench", help="benchmarks; `yiyang bench tenancy --help`")
    bench.add_argument("suite", choices=["tenancy", "search", "page", "decisions", "audit", "sweep"])
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigurationError, ApplicationRoleUnavailable) as problem:
        print(f"configuration: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
