"""`yiyang run`: the whole product in one command, and Ctrl-C stops all of it.

Order of work: backing services (embedded unless DATABASE_URL/REDIS_URL name servers), migrations, demo data
(once per database), then the API server and one worker as child processes. On SIGINT or SIGTERM, at any
moment: the children first, then the embedded servers; nothing stays running.

Each child runs in a session (process group) of its own, so a terminal's Ctrl-C reaches only the launcher,
which stops everything in order; the group is signalled as a whole, so no grandchild survives. On Linux the
children also receive SIGTERM should the launcher die without cleaning up (SIGKILL); embedded servers left by
such a death are stopped by the next start (api/services.py).
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from api.child_processes import die_with_parent
from api.services import BackingServices, ServiceError
from api.settings import REPO_ROOT

DEFAULT_DATA_DIR = REPO_ROOT / "var"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_SEEDED_MARKER = "demo-seeded.json"
_CHILD_STOP_SECONDS = 30  # the worker lets running jobs finish for 20 s (workers/settings.py)


class _Stop(Exception):
    """Raised in the main thread by SIGINT/SIGTERM."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _public_url(host: str, port: int) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


async def _database_identity(database_url: str) -> str:
    """Cluster and database identity: a re-initialized cluster or a re-created database is another one."""
    import asyncpg

    from tenants.db import asyncpg_dsn

    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        row = await connection.fetchrow(
            "SELECT (SELECT system_identifier FROM pg_control_system()) AS cluster, "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AS database"
        )
    finally:
        await connection.close()
    assert row is not None
    return f"{row['cluster']}/{row['database']}"


def _seed_once(database_url: str, data_dir: Path) -> None:
    """Seed the demo data unless the marker in the data folder says this very database has it already."""
    from care.demo import seed_demo_data
    from care.demo_accounts import DEMO_PASSWORD

    marker = data_dir / _SEEDED_MARKER
    try:
        seeded: list[str] = json.loads(marker.read_text())
    except (OSError, ValueError):
        seeded = []
    identity = asyncio.run(_database_identity(database_url))
    if identity in seeded:
        return
    report = asyncio.run(seed_demo_data(database_url))  # idempotent as well: skips a non-empty registry
    if not report.skipped:
        print(
            f"demo data: {report.chains} chains, {report.institutions} institutions, "
            f"{report.residents} residents, {report.family_members} family members, "
            f"{report.accounts} accounts (password {DEMO_PASSWORD!r}: see README, Demo accounts)",
            flush=True,
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps([*seeded, identity]))


def _spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        env=env,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent(),  # safe here: the launcher runs no threads
    )


def _signal_group(child: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)  # start_new_session: the child's pid is its group's id


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + _CHILD_STOP_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"pid {child.pid} did not stop within {_CHILD_STOP_SECONDS} s; killing it", file=sys.stderr)
            child.kill()
            child.wait()
        _signal_group(child, signal.SIGKILL)  # whatever it left in its group


def _wait_for_api(host: str, port: int, api: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and api.poll() is None:
        try:
            socket.create_connection((target, port), 1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


ENVIRONMENT_FILE = "yiyang.env"


def _write_environment(data_dir: Path, env: dict[str, str]) -> None:
    """The running product's service URLs, for `yiyang token`, `yiyang clients` and the like."""
    data_dir.mkdir(parents=True, exist_ok=True)
    names = ("DATABASE_URL", "YIYANG_APP_DATABASE_URL", "REDIS_URL", "YIYANG_ISSUER")
    lines = [f"{name}={env[name]}\n" for name in names if name in env]
    (data_dir / ENVIRONMENT_FILE).write_text("".join(lines))


def run_product(host: str = "127.0.0.1", port: int = 8000, data_dir: Path = DEFAULT_DATA_DIR) -> int:
    """Start (or reuse) PostgreSQL and Redis, migrate, seed once, serve the API and a worker until stopped.

    Returns 0 when stopped by SIGINT/SIGTERM, 1 when something failed to start or stopped on its own.
    """
    previous = {sig: signal.signal(sig, _raise_stop) for sig in _STOP_SIGNALS}
    services = BackingServices(Path(data_dir))
    children: list[subprocess.Popen[bytes]] = []
    try:
        if not _port_free(host, port):
            print(f"{host}:{port} is in use; choose another with --port", file=sys.stderr)
            return 1
        endpoints = services.start()
        os.environ.update(DATABASE_URL=endpoints.database_url, REDIS_URL=endpoints.redis_url)
        # Tokens name the address the browser uses, whatever port was chosen.
        os.environ.setdefault("YIYANG_ISSUER", _public_url(host, port))
        env = dict(os.environ)
        _write_environment(services.data_dir, env)

        from tenants.migrate import MigrationFailed, migrate_all

        try:
            asyncio.run(migrate_all(endpoints.database_url))
        except MigrationFailed as failed:
            print(f"migration failed: {failed}", file=sys.stderr)
            return 1
        _seed_once(endpoints.database_url, services.data_dir)

        children.append(
            _spawn(
                [sys.executable, "-m", "api.cli", "serve", "--host", host, "--port", str(port)],
                env,
            )
        )
        children.append(_spawn([sys.executable, "-m", "api.cli", "worker"], env))
        if not _wait_for_api(host, port, children[0]):
            print("the API server did not start; shutting down", file=sys.stderr)
            return 1
        url = _public_url(host, port)
        print(f"Yiyang is running at {url} (GraphiQL at {url}/graphql). Ctrl-C stops it.", flush=True)
        print(
            f"For `yiyang` commands in another terminal: set -a; . {services.data_dir / ENVIRONMENT_FILE}",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        names = ("the API server", "the worker")
        exited = [child.poll() is not None for child in children]
        stopped = " and ".join(name for name, gone in zip(names, exited, strict=True) if gone)
        print(f"{stopped} stopped unexpectedly; shutting down", file=sys.stderr)
        return 1
    except (_Stop, KeyboardInterrupt):
        print("\nstopping…", flush=True)
        return 0
    except ServiceError as failed:
        print(f"cannot start the backing services: {failed}", file=sys.stderr)
        return 1
    finally:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        try:
            _stop_children(children)
            services.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
