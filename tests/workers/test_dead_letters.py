"""Transient failures retried with backoff through arq's Retry, then a dead letter, then an
administrator's retry (GraphQL), on real Redis, a real arq worker and real PostgreSQL; an institution the
sweep keeps failing in becomes a letter of its own; the workers' counters show on /metrics."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from api.settings import Settings
from compliance.principals import Principal, PrincipalKind
from schema.ids import encode_id
from tests.compliance.audit_support import fresh_tenant
from tests.conftest import World, gql, operator_token, staff_token, token_for
from tests.workers.arq_support import run_burst
from tests.workers.sweep_support import escalated, overdue_institution
from workers import dead_letters, jobs, sweep
from workers.jobs import JobPolicy, backoff, durable, is_transient
from workers.metrics import read as read_metrics

FAST = JobPolicy(max_tries=3, backoff_base=0.05, backoff_cap=0.2)
tries: dict[int, int] = {}
healthy: set[int] = set()


async def flaky_export(ctx: dict[str, Any], *, institution_id: int, key: int) -> str:
    """A job whose mail server (say) is down until the test says otherwise."""
    tries[key] = tries.get(key, 0) + 1
    if key not in healthy:
        raise ConnectionRefusedError(111, f"Connection refused to 'smtp.example.com' for {key}")
    return f"exported {institution_id}"


FLAKY = durable(flaky_export, FAST)


async def broken_job(ctx: dict[str, Any], *, resident_id: int) -> None:
    raise ValueError("bad data in row 'personal detail'")


BROKEN = durable(broken_job, FAST)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    try:
        yield pool
    finally:
        await pool.aclose()


def test_transient_or_permanent_and_backoff() -> None:
    import asyncpg

    assert is_transient(ConnectionRefusedError()) and is_transient(TimeoutError())
    assert is_transient(asyncpg.exceptions.TooManyConnectionsError("too many"))
    wrapped = RuntimeError("query failed")
    wrapped.__cause__ = asyncpg.exceptions.ConnectionDoesNotExistError("closed")
    assert is_transient(wrapped)
    assert not is_transient(ValueError("bad")) and not is_transient(KeyError("x"))
    assert [backoff(n, 2.0, 30.0) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert dead_letters.safe_args({"now": datetime(2026, 1, 1, tzinfo=UTC), "ids": [1, 2]}) == {
        "now": {"$datetime": "2026-01-01T00:00:00+00:00"},
        "ids": [1, 2],
    }
    with pytest.raises(ValueError):
        dead_letters.safe_args({"name": "王秀英"})  # no personal data in a letter
    message = dead_letters.safe_message(ValueError("duplicate key 'zhang.san@example.com' id 12345678"))
    assert "zhang" not in message and "12345678" not in message


async def test_retry_with_backoff_then_a_dead_letter_then_an_admin_retry(
    app: object, client: httpx.AsyncClient, world: World, settings: Settings, redis: ArqRedis
) -> None:
    key = uuid.uuid4().int % 10**12
    queue = f"yiyang:test:{uuid.uuid4().hex}"
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    institution_id = world.institution_ids[3]
    ctx = {"metrics_namespace": settings.redis_namespace}
    job = await redis.enqueue_job(
        "flaky_export", institution_id=institution_id, key=key, _queue_name=queue, _job_id=f"{queue}:1"
    )
    assert job is not None
    await run_burst(redis_settings, queue, [FLAKY], ctx=ctx)
    assert tries[key] == FAST.max_tries  # tried, retried after 0.05 s, after 0.1 s, then given up
    with pytest.raises(ConnectionRefusedError):
        await job.result(timeout=10)

    (letter,) = [
        found
        for found in await dead_letters.page(institution_id=None, open_only=True, after_id=None, limit=100)
        if found.job_id == f"{queue}:1"
    ]
    assert (letter.job_name, letter.queue_name, letter.tries) == ("flaky_export", queue, FAST.max_tries)
    assert letter.error_class == "ConnectionRefusedError" and letter.transient
    assert "smtp.example.com" not in letter.error_message  # quoted parts cut out
    assert letter.args == {"institution_id": institution_id, "key": key} and letter.retried_at is None
    figures = await read_metrics(redis, settings.redis_namespace)
    assert figures.jobs[("flaky_export", "retried")] >= 2
    assert figures.jobs[("flaky_export", "failed")] >= 1
    assert figures.jobs[("flaky_export", "dead_lettered")] >= 1

    letter_id = encode_id("DeadLetter", 0, letter.id)  # a job of no institution: operators only
    listed = await gql(
        client, "{ deadLetters(first: 100) { edges { node { id jobName tries } } } }", token=operator_token()
    )
    assert {"id": letter_id, "jobName": "flaky_export", "tries": 3} in [
        edge["node"] for edge in listed["data"]["deadLetters"]["edges"]
    ]
    retry = "mutation($id: ID!) { retryDeadLetter(input: {id: $id}) { deadLetter { retryJobId retriedBy }"
    retry += " userErrors { code } } }"
    admin = await gql(client, retry, {"id": letter_id}, token=staff_token(institution_id))
    assert [error["extensions"]["code"] for error in admin["errors"]] == ["NOT_FOUND"]
    operator = token_for(
        Principal(subject=f"account:{uuid.uuid4().int % 10**8}", kind=PrincipalKind.OPERATOR)
    )
    healthy.add(key)  # the mail server is back
    done = await gql(client, retry, {"id": letter_id}, token=operator)
    assert done["data"]["retryDeadLetter"]["userErrors"] == []
    retried = done["data"]["retryDeadLetter"]["deadLetter"]
    assert retried["retryJobId"] == f"{queue}:dead-letter:{letter.id}" and retried["retriedBy"].startswith(
        "account:"
    )
    await run_burst(redis_settings, queue, [FLAKY], ctx=ctx)
    assert await redis.exists(f"arq:result:{retried['retryJobId']}")
    assert tries[key] == FAST.max_tries + 1
    again = await gql(client, retry, {"id": letter_id}, token=operator)
    assert again["data"]["retryDeadLetter"]["userErrors"] == [{"code": "CONFLICT"}]
    assert (await dead_letters.get(letter.id)).retried_at is not None


async def test_a_permanent_failure_is_a_dead_letter_at_once(
    app: object, world: World, settings: Settings, redis: ArqRedis
) -> None:
    queue = f"yiyang:test:{uuid.uuid4().hex}"
    job = await redis.enqueue_job("broken_job", resident_id=7, _queue_name=queue, _job_id=f"{queue}:1")
    assert job is not None
    await run_burst(RedisSettings.from_dsn(settings.redis_url), queue, [BROKEN])
    with pytest.raises(ValueError):
        await job.result(timeout=10)
    (letter,) = [
        found
        for found in await dead_letters.page(institution_id=None, open_only=True, after_id=None, limit=100)
        if found.job_id == f"{queue}:1"
    ]
    assert letter.tries == 1 and not letter.transient and letter.error_class == "ValueError"
    assert "personal detail" not in letter.error_message and letter.args == {"resident_id": 7}


async def test_an_institution_the_sweep_keeps_failing_in_becomes_a_letter_its_admin_retries(
    app: object,
    client: httpx.AsyncClient,
    world: World,
    settings: Settings,
    redis: ArqRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    flaky = await overdue_institution("连不上", now, residents=1, tasks=3)
    buggy = await overdue_institution("坏数据", now, residents=1, tasks=3)
    fine = (await fresh_tenant(f"正常-{uuid.uuid4().hex[:6]}")).institution_id
    real = sweep.escalate_overdue

    async def escalate(at: datetime) -> Any:
        from tenants.context import current_tenant

        if current_tenant().institution_id == flaky.tenant.institution_id:
            raise ConnectionResetError("connection reset by peer")
        if current_tenant().institution_id == buggy.tenant.institution_id:
            raise KeyError("missing")
        return await real(at)

    monkeypatch.setattr(sweep, "escalate_overdue", escalate)
    ctx = {
        "redis": redis,
        "metrics_namespace": settings.redis_namespace,
        "mailer": None,
        "webhook_sender": None,
    }
    ids = [flaky.tenant.institution_id, buggy.tenant.institution_id, fine]

    def open_letters() -> Any:
        return dead_letters.page(institution_id=None, open_only=True, after_id=None, limit=100)

    first = await sweep.sweep_due(ctx, now=now, institution_ids=ids)
    assert first["failures"] == 2 and first["dead_lettered"] == 1  # the bug at once, the outage not yet
    letters = {
        letter.institution_id: letter for letter in await open_letters() if letter.institution_id in ids
    }
    assert set(letters) == {buggy.tenant.institution_id}
    assert letters[buggy.tenant.institution_id].args == {"institution_ids": [buggy.tenant.institution_id]}
    for _ in range(sweep.TENANT_MAX_RUNS - 1):
        await sweep.sweep_due(ctx, now=now, institution_ids=ids)
    letters = {
        letter.institution_id: letter for letter in await open_letters() if letter.institution_id in ids
    }
    assert set(letters) == {flaky.tenant.institution_id, buggy.tenant.institution_id}
    assert letters[flaky.tenant.institution_id].transient
    assert letters[buggy.tenant.institution_id].tries == sweep.TENANT_MAX_RUNS  # one letter, more tries
    # Other steps of the failing institutions still ran; nothing was escalated there.
    assert set((await escalated(flaky.tenant, flaky.task_ids)).values()) == {None}

    # Its admin sees the institution's letter only, and retries it once the cause is fixed.
    monkeypatch.setattr(sweep, "escalate_overdue", real)
    admin = staff_token(flaky.tenant.institution_id)
    listed = await gql(client, "{ deadLetters { edges { node { id jobName institutionId } } } }", token=admin)
    nodes = [edge["node"] for edge in listed["data"]["deadLetters"]["edges"]]
    letter_id = encode_id("DeadLetter", flaky.tenant.institution_id, letters[flaky.tenant.institution_id].id)
    assert nodes == [
        {
            "id": letter_id,
            "jobName": "sweep_due",
            "institutionId": encode_id("Institution", flaky.tenant.institution_id),
        }
    ]
    other = encode_id("DeadLetter", buggy.tenant.institution_id, letters[buggy.tenant.institution_id].id)
    retry = "mutation($id: ID!) { retryDeadLetter(input: {id: $id}) { deadLetter { retryJobId }"
    retry += " userErrors { code } } }"
    refused = await gql(client, retry, {"id": other}, token=admin)
    assert [error["extensions"]["code"] for error in refused["errors"]] == ["NOT_FOUND"]
    done = await gql(client, retry, {"id": letter_id}, token=admin)
    retry_job = done["data"]["retryDeadLetter"]["deadLetter"]["retryJobId"]
    queue = letters[flaky.tenant.institution_id].queue_name
    assert retry_job == f"{queue}:dead-letter:{letters[flaky.tenant.institution_id].id}"
    # The retry waits on the sweep's queue; run it as the short queue's worker would.
    ran = await redis.zscore(queue, retry_job)
    assert ran is not None
    await run_burst(RedisSettings.from_dsn(settings.redis_url), queue, [jobs.durable(sweep.sweep_due)])
    assert None not in (await escalated(flaky.tenant, flaky.task_ids)).values()


async def test_metrics_show_the_workers(
    app: object, client: httpx.AsyncClient, world: World, settings: Settings, redis: ArqRedis
) -> None:
    def completed(text: str) -> float:
        prefix = 'yiyang_worker_jobs_total{job="sweep_due",outcome="completed"} '
        found = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(found[0].removeprefix(prefix)) if found else 0.0

    before = completed((await client.get("/metrics")).text)
    queue = f"yiyang:test:{uuid.uuid4().hex}"
    mine = (await fresh_tenant(f"指标-{uuid.uuid4().hex[:6]}")).institution_id
    job = await redis.enqueue_job(
        "sweep_due", institution_ids=[mine], _queue_name=queue, _job_id=f"{queue}:1"
    )
    assert job is not None
    ctx = {"metrics_namespace": settings.redis_namespace, "mailer": None, "webhook_sender": None}
    await run_burst(
        RedisSettings.from_dsn(settings.redis_url), queue, [jobs.durable(sweep.sweep_due)], ctx=ctx
    )
    assert (await job.result(timeout=10))["failures"] == 0
    response = await client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert completed(text) == before + 1
    assert 'yiyang_worker_last_success_timestamp_seconds{job="sweep_due"}' in text
    assert 'yiyang_worker_last_duration_seconds{job="sweep_due"}' in text
    assert 'yiyang_worker_job_duration_seconds_count{job="sweep_due"}' in text
    assert f'yiyang_worker_queue_depth{{queue="{settings.redis_namespace}:short"}}' in text
    assert f'yiyang_worker_queue_depth{{queue="{settings.redis_namespace}:long"}}' in text
