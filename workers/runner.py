"""`yiyang worker`: the workers of both queues (or of the ones named) in one process, one event loop.

arq's own `run_worker` runs one queue and installs its signal handlers on the loop; two workers in one
loop would replace each other's. Here the workers are made with `handle_signals=False` and the process
installs one handler that tells each of them what arq's `handle_sig_wait_for_completion` does: stop
taking jobs, let the running ones finish within `job_completion_wait`, then stop. The database pool and
the mailer are opened once for both.
"""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

from arq.worker import Worker, create_worker

from tenants.db import close_database, open_database
from workers.settings import WORKER_SETTINGS, close_resources, open_resources

log = logging.getLogger(__name__)


async def run_workers(queues: Sequence[str] = tuple(WORKER_SETTINGS), *, burst: bool = False) -> None:
    await open_database(os.environ["DATABASE_URL"])
    shared: dict[str, Any] = {}
    await open_resources(shared)
    workers: list[Worker] = [
        create_worker(
            WORKER_SETTINGS[queue],  # type: ignore[arg-type]
            handle_signals=False,
            on_startup=None,
            on_shutdown=None,
            ctx=dict(shared),
            burst=burst,
        )
        for queue in queues
    ]
    loop = asyncio.get_running_loop()

    def stop(signum: signal.Signals) -> None:
        log.info("%s: no new jobs; waiting for the running ones to finish", signum.name)
        for worker in workers:
            if worker.allow_pick_jobs:
                worker.handle_sig_wait_for_completion(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    try:
        for worker in workers:
            worker.main_task = loop.create_task(worker.main())
        await asyncio.gather(*(w.main_task for w in workers if w.main_task), return_exceptions=True)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):  # a job cut short at the end of the wait
                await worker.close()
        await close_resources(shared)
        await close_database()


def main(queues: Sequence[str] = tuple(WORKER_SETTINGS)) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_workers(queues))
    return 0
