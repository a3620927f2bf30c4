"""Dead letters (migrations/shared/0012_dead_letters.sql): jobs that failed for good, kept for an
administrator to look at and retry.

A letter holds the job's name and arguments (ids and times only: `safe_args` refuses anything else),
the institution the failure happened in if any, the error's class and a short message (quoted parts and
long numbers cut out: what an exception says about data stays in the worker's log), how many tries and
when the first and last failed. A failure of the same job (a periodic job: of the same name) in the same
institution while its letter is open adds a try to that letter rather than a row.

Retrying (`claim_retry`) marks the letter retried by whom and when, once (a second retry of the same
letter is a Conflict), and names the job id it was re-enqueued under: `<queue>:dead-letter:<id>`, so
that two administrators clicking at once enqueue one job.
"""

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tenants.db import default_connection
from tenants.errors import Conflict, NotFound
from tenants.schema_names import SHARED_SCHEMA

TABLE = f"{SHARED_SCHEMA}.dead_letter"
MAX_MESSAGE = 300
ALREADY_RETRIED = "This job has been retried already."

_QUOTED = re.compile(r"""(["'`]).*?\1|\$\d+|\b\d{5,}\b""")


def safe_message(error: BaseException) -> str:
    """A short, data-free description of `error`: its first line, quoted parts and long numbers cut out."""
    first = (str(error).strip().splitlines() or [""])[0]
    cleaned = _QUOTED.sub("…", first)
    return (cleaned or type(error).__name__)[:MAX_MESSAGE]


def _safe_value(value: object) -> object:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, datetime):
        return {"$datetime": value.astimezone(UTC).isoformat()}
    if isinstance(value, list | tuple | frozenset | set) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        return sorted(value) if isinstance(value, frozenset | set) else list(value)
    raise ValueError(f"a job argument of type {type(value).__name__} is not an id or a time")


def safe_args(kwargs: Mapping[str, object]) -> dict[str, object]:
    """A job's keyword arguments as stored: ids, lists of ids and times only."""
    return {name: _safe_value(value) for name, value in kwargs.items()}


def restored_args(stored: Mapping[str, Any]) -> dict[str, object]:
    """The arguments a retry is enqueued with: as stored, but without `now` (a retry runs at its own
    time: the sweep of 12:01 retried at 15:00 sweeps what is due at 15:00)."""

    def restore(value: object) -> object:
        if isinstance(value, dict) and set(value) == {"$datetime"}:
            return datetime.fromisoformat(value["$datetime"])
        return value

    return {name: restore(value) for name, value in stored.items() if name != "now"}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    job_name: str
    job_id: str
    queue_name: str
    args: dict[str, Any]
    institution_id: int | None
    error_class: str
    error_message: str
    transient: bool
    tries: int
    first_failed_at: datetime
    last_failed_at: datetime
    retried_at: datetime | None
    retried_by: str | None
    retry_job_id: str | None


_COLUMNS = """id, job_name, job_id, queue_name, args, institution_id, error_class, error_message, transient,
    tries, first_failed_at, last_failed_at, retried_at, retried_by, retry_job_id"""


def _letter(row: Mapping[str, Any]) -> DeadLetter:
    args = row["args"]
    return DeadLetter(
        **{**dict(row), "args": json.loads(args) if isinstance(args, str) else dict(args)}  # type: ignore[arg-type]
    )


async def record(
    *,
    job_name: str,
    job_id: str,
    queue_name: str,
    letter_key: str,
    args: Mapping[str, object],
    institution_id: int | None,
    error: BaseException | str,
    transient: bool,
    tries: int,
    now: datetime,
) -> DeadLetter:
    """Open a letter, or add `tries` to the open one of the same key and institution."""
    if isinstance(error, BaseException):
        error_class, message = type(error).__name__, safe_message(error)
    else:
        error_class, message = error, error
    rows = await default_connection().execute_query_dict(
        f"""INSERT INTO {TABLE} AS d (job_name, job_id, letter_key, args, institution_id, error_class,
                error_message, transient, tries, first_failed_at, last_failed_at, queue_name)
            VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $10, $11)
            ON CONFLICT (letter_key, coalesce(institution_id, 0)) WHERE retried_at IS NULL
            DO UPDATE SET job_id = excluded.job_id, queue_name = excluded.queue_name, args = excluded.args,
                error_class = excluded.error_class,
                error_message = excluded.error_message, transient = excluded.transient,
                tries = d.tries + excluded.tries,
                last_failed_at = greatest(d.last_failed_at, excluded.last_failed_at)
            RETURNING {_COLUMNS}""",
        [
            job_name,
            job_id[:200],
            letter_key[:200],
            json.dumps(dict(args), sort_keys=True),
            institution_id,
            error_class[:200],
            message[:MAX_MESSAGE],
            transient,
            tries,
            now,
            queue_name,
        ],
    )
    return _letter(rows[0])


async def get(letter_id: int) -> DeadLetter:
    rows = await default_connection().execute_query_dict(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = $1", [letter_id]
    )
    if not rows:
        raise NotFound("Not found.")
    return _letter(rows[0])


def _where(institution_id: int | None, open_only: bool) -> tuple[str, list[object]]:
    clauses, params = [], []
    if institution_id is not None:
        params.append(institution_id)
        clauses.append(f"institution_id = ${len(params)}")
    if open_only:
        clauses.append("retried_at IS NULL")
    return (" AND ".join(clauses) or "true"), params


async def page(
    *, institution_id: int | None, open_only: bool, after_id: int | None, limit: int
) -> list[DeadLetter]:
    """Newest first; `institution_id` None: every letter (platform operators)."""
    where, params = _where(institution_id, open_only)
    if after_id is not None:
        params.append(after_id)
        where += f" AND id < ${len(params)}"
    params.append(limit)
    rows = await default_connection().execute_query_dict(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE {where} ORDER BY id DESC LIMIT ${len(params)}", params
    )
    return [_letter(row) for row in rows]


async def count(*, institution_id: int | None, open_only: bool) -> int:
    where, params = _where(institution_id, open_only)
    rows = await default_connection().execute_query_dict(
        f"SELECT count(*) AS n FROM {TABLE} WHERE {where}", params
    )
    return int(rows[0]["n"])


def retry_job_id(queue_name: str, letter_id: int) -> str:
    """Under the queue's name (and so the deployment's namespace): ids of letters restart with a new
    database, arq's keys in a shared Redis do not."""
    return f"{queue_name}:dead-letter:{letter_id}"


async def claim_retry(letter_id: int, *, by: str, now: datetime) -> DeadLetter:
    """Mark the letter retried (once); the caller enqueues it under `retry_job_id` in the same
    transaction, so that a failed enqueue leaves the letter open."""
    rows = await default_connection().execute_query_dict(
        f"""UPDATE {TABLE} SET retried_at = $2, retried_by = $3,
                retry_job_id = queue_name || ':dead-letter:' || id
            WHERE id = $1 AND retried_at IS NULL RETURNING {_COLUMNS}""",
        [letter_id, now, by[:200]],
    )
    if not rows:
        await get(letter_id)  # NotFound when there is none
        raise Conflict(ALREADY_RETRIED, field="id")
    return _letter(rows[0])


async def open_letters(job_name: str, institution_ids: Sequence[int]) -> set[int]:
    """Which of `institution_ids` have an open letter of `job_name`."""
    rows = await default_connection().execute_query_dict(
        f"""SELECT institution_id FROM {TABLE}
            WHERE job_name = $1 AND retried_at IS NULL AND institution_id = ANY($2::bigint[])""",
        [job_name, list(institution_ids)],
    )
    return {row["institution_id"] for row in rows}
