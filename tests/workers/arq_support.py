"""Running enqueued jobs with a real arq worker in burst mode (it stops when the queue is empty)."""

from collections.abc import Callable, Sequence
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Function, Worker


async def run_burst(
    redis_settings: RedisSettings,
    queue: str,
    functions: Sequence[Callable[..., Any] | Function],
    *,
    ctx: dict[str, Any] | None = None,
) -> None:
    worker = Worker(
        functions=list(functions),
        ctx=ctx,
        redis_settings=redis_settings,
        queue_name=queue,
        burst=True,
        poll_delay=0.05,
        handle_signals=False,
    )
    try:
        await worker.main()
    finally:
        await worker.close()
