"""`yiyang serve`: API processes on one port, connections spread over them, stopped together."""

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from api.settings import REPO_ROOT, Settings
from tests.conftest import LiveServer, _free_port

QUERY = {"query": "{ residents(first: 1) { edges { node { id } } } }"}


def _api_processes(serve_pid: int) -> list[psutil.Process]:
    return psutil.Process(serve_pid).children()


def _established(process: psutil.Process, port: int) -> int:
    connections = process.net_connections("tcp")
    return sum(1 for c in connections if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_connections_spread_over_the_api_processes(live_server: LiveServer) -> None:
    """32 keep-alive clients, as in the benchmark: every API process gets a share of them."""
    processes = _api_processes(live_server.pid)
    assert len(processes) == 2
    headers = {"Authorization": f"Bearer {live_server.staff_token}"}
    clients = [httpx.Client(base_url=live_server.base_url, headers=headers) for _ in range(32)]
    try:
        for client in clients:
            assert "errors" not in client.post("/graphql", json=QUERY).json()
        port = int(live_server.base_url.rsplit(":", 1)[1])
        held = [
            sum(
                1
                for c in process.net_connections("tcp")
                if c.laddr.port == port and c.status == "ESTABLISHED"
            )
            for process in processes
        ]
    finally:
        for client in clients:
            client.close()
    assert sum(held) == 32
    assert min(held) >= 4, f"connections per API process: {held}"


def _start(settings: Settings, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "YIYANG_ENV": "test",
        "YIYANG_LOG_LEVEL": "warning",
    }
    serve = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=REPO_ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if (
                httpx.get(f"{base}/healthz", timeout=1).status_code == 200
                and len(_api_processes(serve.pid)) == workers
            ):
                return serve, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    serve.kill()
    pytest.fail("yiyang serve did not become healthy within 30 s")


def test_sigterm_stops_every_api_process(settings: Settings) -> None:
    serve, _ = _start(settings, workers=2)
    processes = _api_processes(serve.pid)
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=20) == 0
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert alive == []


def test_api_processes_do_not_outlive_a_killed_supervisor(settings: Settings) -> None:
    """SIGKILL leaves the supervisor no chance to stop them: they must go by themselves (pdeathsig)."""
    serve, _ = _start(settings, workers=2)
    processes = _api_processes(serve.pid)
    serve.kill()
    serve.wait(timeout=10)
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert alive == []


def test_a_dying_api_process_takes_the_others_down(settings: Settings) -> None:
    """Whoever supervises `yiyang serve` (yiyang run, systemd) must learn that the API is not whole."""
    serve, _ = _start(settings, workers=2)
    first, second = _api_processes(serve.pid)
    first.kill()
    assert serve.wait(timeout=20) != 0
    _, alive = psutil.wait_procs([second], timeout=10)
    assert alive == []


def test_port_in_use_is_a_clear_error(settings: Settings, live_server: LiveServer) -> None:
    port = live_server.base_url.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--port", port, "--workers", "1"],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


def _refused(settings: Settings, **variables: str) -> subprocess.CompletedProcess[str]:
    """`yiyang serve` with the test servers and `variables` on top of the environment; it must not serve."""
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url, **variables}
    env = {name: value for name, value in env.items() if value}  # an empty value: the variable unset
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(_free_port())],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


WHOLE_NUMBER = "must be a whole number of at least 1, not {value!r}"


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("YIYANG_API_WORKERS", "0", WHOLE_NUMBER),
        ("YIYANG_API_WORKERS", "many", WHOLE_NUMBER),
        ("YIYANG_DB_POOL_SIZE", "-3", WHOLE_NUMBER),
        ("YIYANG_ROOT_KEY_NEW", "bm90LTMyLWJ5dGVz", "must decode to 32 bytes, not 12"),
        (
            "YIYANG_REDIS_NAMESPACE",
            "Not A Namespace",
            "must be 1-40 lower-case letters, digits, '-' or '_', not {value!r}",
        ),
    ],
)
def test_bad_configuration_is_refused_before_serving(
    settings: Settings, variable: str, value: str, problem: str
) -> None:
    result = _refused(settings, **{variable: value})
    assert result.returncode == 2
    assert result.stderr.strip() == f"configuration: {variable} {problem.format(value=value)}"


def test_production_without_a_root_key_is_refused(settings: Settings) -> None:
    result = _refused(
        settings,
        YIYANG_ENV="production",
        YIYANG_ISSUER="https://api.yiyang.example",
        YIYANG_ROOT_KEY="",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration: YIYANG_ROOT_KEY is required in production"
