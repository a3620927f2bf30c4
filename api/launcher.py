"""`yiyang run`: the whole product in one command, and Ctrl-C stops all of it."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from api.services import BackingServices

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _prepare(database_url: str) -> None:
    from care.demo import seed_demo_data
    from tenants.migrate import migrate_all

    asyncio.run(migrate_all(database_url))
    report = asyncio.run(seed_demo_data(database_url))
    if not report.skipped:
        print(
            f"demo data: {report.chains} chains, {report.institutions} institutions, "
            f"{report.residents} residents, {report.family_members} family members",
            flush=True,
        )


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_product(host: str = "127.0.0.1", port: int = 8000, data_dir: Path = Path("var")) -> int:
    """Start (or reuse) PostgreSQL and Redis, migrate, seed once, serve the API and a worker."""
    previous = {sig: signal.signal(sig, _raise_stop) for sig in _STOP_SIGNALS}
    services = BackingServices(data_dir)
    children: list[subprocess.Popen[bytes]] = []
    try:
        endpoints = services.start()
        env = {**os.environ, "DATABASE_URL": endpoints.database_url, "REDIS_URL": endpoints.redis_url}
        os.environ.update(DATABASE_URL=endpoints.database_url, REDIS_URL=endpoints.redis_url)
        _prepare(endpoints.database_url)
        # Children get their own session: a terminal's Ctrl-C reaches only us, and we stop them in order.
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "api.app:create_app",
                    "--factory",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--no-access-log",
                ],
                env=env,
                start_new_session=True,
            )
        )
        children.append(
            subprocess.Popen([sys.executable, "-m", "api.cli", "worker"], env=env, start_new_session=True)
        )
        print(
            f"Yiyang is running on http://{host}:{port} (GraphiQL at /graphql). Ctrl-C stops it.", flush=True
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("a component stopped unexpectedly; shutting down", file=sys.stderr)
        return 1
    except _Stop:
        print("\nstopping…", flush=True)
        return 0
    finally:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        _stop_children(children)
        services.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
