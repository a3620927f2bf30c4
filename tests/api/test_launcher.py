"""`yiyang run` (what `make run` calls): embedded servers, migrations, demo data, API and worker; Ctrl-C
stops everything it started."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from api.launcher import ENVIRONMENT_FILE
from api.settings import REPO_ROOT
from tests.conftest import _free_port

STARTUP_SECONDS = 120


def _descendants_and_servers(root_pid: int, data_dir: Path) -> list[psutil.Process]:
    found: dict[int, psutil.Process] = {}
    try:
        for child in psutil.Process(root_pid).children(recursive=True):
            found[child.pid] = child
    except psutil.NoSuchProcess:
        pass
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if str(data_dir) in " ".join(process.info["cmdline"] or []):
            found[process.pid] = process
    return [p for p in found.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_run_serves_the_demo_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    product = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "run", "--port", str(port), "--data-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline and product.poll() is None:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError(
                f"not healthy in time; output:\n{product.stdout.read() if product.stdout else ''}"
            )
        started_env = dict(
            line.split("=", 1) for line in (tmp_path / ENVIRONMENT_FILE).read_text().splitlines()
        )
        assert started_env["YIYANG_ISSUER"] == base
        token = subprocess.run(
            [sys.executable, "-m", "api.cli", "token", "--login", "nurse01@demo.yiyang.cn"],
            cwd=REPO_ROOT,
            env={**env, **started_env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        body = httpx.post(
            f"{base}/graphql",
            json={"query": "{ residents(first: 5) { totalCount edges { node { name } } } }"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()
        assert body["data"]["residents"]["totalCount"] >= 40
        assert httpx.get(f"{base}/", timeout=5).status_code == 200
        started = _descendants_and_servers(product.pid, tmp_path)
        commands = " ".join(" ".join(p.cmdline()) for p in started)
        for part in ("api.cli serve", "api.serve", "api.cli worker", "postgres", "valkey-server"):
            assert part in commands, f"{part} is not running: {commands}"
    finally:
        product.send_signal(signal.SIGINT)
        try:
            product.wait(timeout=60)
        except subprocess.TimeoutExpired:
            product.kill()
            raise
    assert product.returncode == 0
    _, alive = psutil.wait_procs(started, timeout=10)
    assert [" ".join(p.cmdline()) for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    assert _descendants_and_servers(product.pid, tmp_path) == []
    with httpx.Client() as http:
        try:
            http.get(f"{base}/healthz", timeout=1)
            raise AssertionError("the API still answers after Ctrl-C")
        except httpx.ConnectError:
            pass
