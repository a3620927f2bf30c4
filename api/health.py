"""/healthz: the process is up and can reach PostgreSQL and Redis."""

import asyncio

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import JSONResponse

from tenants.db import default_connection

CHECK_TIMEOUT_SECONDS = 2.0


async def _database_ok() -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await default_connection().execute_query("SELECT 1")
        return True
    except Exception:  # any failure to answer means unhealthy; the reason goes to the log, not the client
        return False


async def _redis_ok(redis: Redis) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return bool(await redis.ping())
    except Exception:
        return False


async def healthz(request: Request) -> JSONResponse:
    database, cache = await asyncio.gather(_database_ok(), _redis_ok(request.app.state.redis))
    healthy = database and cache
    return JSONResponse(
        {"status": "ok" if healthy else "unavailable", "database": database, "redis": cache},
        status_code=200 if healthy else 503,
    )
