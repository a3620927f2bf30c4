"""Relay cursor connections with keyset cursors and a capped page size."""

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import strawberry

from tenants.errors import InvalidInput

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

NodeT = TypeVar("NodeT")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[NodeT]):
    cursor: str
    node: NodeT


@strawberry.type
class Connection(Generic[NodeT]):
    edges: list[Edge[NodeT]]
    page_info: PageInfo
    count_total: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="Number of items matching the filter, across all pages.")
    async def total_count(self) -> int:
        return await self.count_total()


@dataclass(frozen=True)
class PageRequest:
    after_key: int | None
    size: int


def encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(f"k:{key}".encode()).decode().rstrip("=")


def page_request(first: int | None, after: str | None) -> PageRequest:
    size = DEFAULT_PAGE_SIZE if first is None else first
    if not 0 <= size <= MAX_PAGE_SIZE:
        raise InvalidInput("first must be between 0 and {max}.", field="first", max=MAX_PAGE_SIZE)
    if after is None:
        return PageRequest(None, size)
    try:
        kind, key = base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)).decode().split(":")
        if kind != "k":
            raise ValueError(kind)
        return PageRequest(int(key), size)
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidInput("Malformed cursor.", field="after") from None


def connection(
    rows: Sequence[object],
    request: PageRequest,
    *,
    key: Callable[[object], int],
    node: Callable[[object], NodeT],
    count_total: Callable[[], Awaitable[int]],
) -> Connection[NodeT]:
    """Build a page from `rows` fetched with limit `request.size + 1` (the extra row says there is more)."""
    page = list(rows[: request.size])
    edges = [Edge(cursor=encode_cursor(key(row)), node=node(row)) for row in page]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > request.size,
            has_previous_page=request.after_key is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        count_total=count_total,
    )


def paginate_loaded(
    items: Sequence[NodeT], request: PageRequest, *, key: Callable[[NodeT], int]
) -> Connection[NodeT]:
    """A connection over a short list already in memory (e.g. a resident's family members)."""
    remaining = [item for item in items if request.after_key is None or key(item) > request.after_key]

    async def total() -> int:
        return len(items)

    return connection(
        remaining[: request.size + 1], request, key=key, node=lambda item: item, count_total=total
    )
