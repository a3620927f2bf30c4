"""The `yiyang` command against the test database, as an operator would type it."""

import os
import subprocess
import sys

from api.settings import REPO_ROOT, Settings
from compliance.identity.access_tokens import verify_access_token
from compliance.identity.account_models import AccountKind
from compliance.identity.accounts import NewAccount, add_staff_membership, create_account
from compliance.identity.client_models import OAuthClient
from compliance.principals import StaffRole
from tests.conftest import World

PASSWORD = "lanterns-over-the-river"


def yiyang(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tenants_create_list_and_noop_migrate(settings: Settings, world: World) -> None:
    created = yiyang(
        settings, "tenants", "create", "--name", "命令行养老院", "--region", "test-east", "--beds", "80"
    )
    assert created.returncode == 0, created.stderr
    institution_id, schema_name, name = created.stdout.strip().split("\t")
    assert schema_name.startswith("t_") and name == "命令行养老院"

    listed = yiyang(settings, "tenants", "list")
    assert f"{institution_id}\t{schema_name}\tactive\ttest-east" in listed.stdout

    migrated = yiyang(settings, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "migrations applied: 0" in migrated.stdout


def test_tenants_create_refuses_bad_input(settings: Settings, world: World) -> None:
    refused = yiyang(
        settings, "tenants", "create", "--name", "x", "--region", "nowhere", "--time-zone", "Mars/Base"
    )
    assert refused.returncode == 2
    assert "regionCode" in refused.stderr and "timeZone" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_token_command_issues_a_working_token(settings: Settings, world: World) -> None:
    account = await create_account(
        NewAccount(
            kind=AccountKind.STAFF, login="cli-nurse@example.com", display_name="护士", password=PASSWORD
        )
    )
    await add_staff_membership(account, world.institution_ids[0], StaffRole.NURSE)
    issued = yiyang(settings, "token", "--login", "CLI-Nurse@example.com")
    assert issued.returncode == 0, issued.stderr
    claims = await verify_access_token(issued.stdout.strip(), issuer=settings.issuer)
    principal = claims.principal()
    assert principal.institution_id == world.institution_ids[0] and principal.roles == {StaffRole.NURSE}
    assert principal.subject == f"account:{account.id}" and claims.expires_at - claims.issued_at == 600

    unknown = yiyang(settings, "token", "--login", "nobody@example.com")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr


def test_clients_create_then_revoke(settings: Settings, world: World) -> None:
    created = yiyang(
        settings,
        "clients", "create", "--name", "智能床垫", "--institution", str(world.institution_ids[2]),
        "--scope", "residents:read", "--scope", "vitals:write",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    fields = dict(line.split("\t") for line in created.stdout.strip().splitlines())
    assert set(fields) == {"client_id", "client_secret"} and len(fields["client_secret"]) >= 43

    unknown_scope = yiyang(
        settings, "clients", "create", "--name", "x", "--institution", "1", "--scope", "everything"
    )
    assert unknown_scope.returncode == 2 and "Traceback" not in unknown_scope.stderr

    assert yiyang(settings, "clients", "revoke", fields["client_id"]).returncode == 0
    missing = yiyang(settings, "clients", "revoke", "no-such-client")
    assert missing.returncode == 2 and missing.stderr.strip() == "no client no-such-client"


async def test_clients_create_grants_the_webhooks_scope(settings: Settings, world: World) -> None:
    created = yiyang(
        settings,
        "clients", "create", "--name", "事件对接", "--institution", str(world.institution_ids[2]),
        "--scope", "webhooks:manage",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    fields = dict(line.split("\t") for line in created.stdout.strip().splitlines())
    row = await OAuthClient.get(client_id=fields["client_id"])
    assert list(row.allowed_scopes) == ["webhooks:manage"]
    assert yiyang(settings, "clients", "revoke", fields["client_id"]).returncode == 0
