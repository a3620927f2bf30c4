"""`yiyang serve`: the API as one uvicorn process per core, all on one port.

An API process spends its time on CPU (GraphQL execution), so one process uses one core. uvicorn's own
`--workers` shares one listening socket among its processes; here each process listens on a socket of its
own with SO_REUSEPORT, and the kernel spreads connections over them by address hash. Measured with the
tenancy benchmark's 32 keep-alive clients on 2 cores, minutes apart on the same code: 354 requests/s with
`uvicorn --workers 2`, 548/s this way.

This process only supervises: SIGINT/SIGTERM stop every API process; if one dies, the others are stopped
and its exit code returned, so whoever started us (`yiyang run`, systemd, a container runtime) sees it.
"""

import gc
import os
import signal
import socket
import subprocess
import sys
import time

from api.child_processes import die_with_parent
from api.settings import REPO_ROOT, ConfigurationError, Settings, positive_int_setting

_STOP_SECONDS = 15


def default_workers() -> int:
    """YIYANG_API_WORKERS, else one API process per core this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return positive_int_setting(os.environ, "YIYANG_API_WORKERS", cores)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _refuse_if_taken(host: str, port: int) -> None:
    """SO_REUSEPORT would let us share the port with another server that set it too: refuse instead."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def _listening_socket(host: str, port: int) -> socket.socket:
    family = _family(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_api_process(fd: int) -> None:
    """One API process: uvicorn serving the app on the listening socket inherited as `fd`."""
    import uvicorn

    sock = socket.socket(fileno=fd)  # family and type read from the descriptor
    config = uvicorn.Config(
        "api.app:create_app",
        factory=True,
        access_log=False,
        # Longer than a client pool's idle gap, as behind a load balancer: with uvicorn's default of 5 s, an
        # idle keep-alive connection can close just as a client reuses it.
        timeout_keep_alive=75,
        log_level=os.environ.get("YIYANG_LOG_LEVEL", "info"),
    )
    config.load()  # imports the app and builds it (schema, ORM metadata): most of the heap, never garbage
    # Keep the collector from walking that heap again: a full collection of it paused every request of the
    # process for 58 ms (measured in-process; about 1.5 ms once frozen): a p99 spike under load.
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run(sockets=[sock])


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def serve(host: str, port: int, workers: int | None = None) -> int:
    """Serve until SIGINT/SIGTERM (0), or until an API process dies (its exit code)."""
    Settings.from_environ()  # refuse a bad configuration here, once, rather than in every API process
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    if not hasattr(socket, "SO_REUSEPORT"):
        workers = 1  # no way to give each process a socket of its own on this platform
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        try:
            _refuse_if_taken(host, port)
            sockets = [_listening_socket(host, port) for _ in range(workers)]
        except OSError as error:
            print(f"cannot listen on {host}:{port}: {error.strerror}", file=sys.stderr)
            return 1
        for sock in sockets:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "api.serve", str(sock.fileno())],
                    cwd=REPO_ROOT,
                    pass_fds=(sock.fileno(),),
                    preexec_fn=die_with_parent(),
                )
            )
            sock.close()  # the child holds it now
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        failed = next(process for process in processes if process.returncode is not None)
        print(f"API process {failed.pid} exited with {failed.returncode}; stopping the rest", file=sys.stderr)
        return failed.returncode or 1
    except (_Stop, KeyboardInterrupt):
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop(processes)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    run_api_process(int(sys.argv[1]))
