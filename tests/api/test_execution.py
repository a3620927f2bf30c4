"""The short path for plain leaf fields (schema/execution.py) answers exactly as graphql-core's own path."""

import enum
from datetime import date
from typing import Any

import pytest
import strawberry
from strawberry.permission import BasePermission
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from schema.execution import YiyangExecutionContext


@strawberry.enum
class Mood(enum.Enum):
    CALM = "calm"
    RESTLESS = "restless"


class Never(BasePermission):
    message = "not for you"

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return False


@strawberry.type
class Room:
    number: str
    floor: int


@strawberry.interface
class Place:
    label: str


@strawberry.type
class Garden(Place):
    plants: int


class Gone(Exception):
    """Not a builtin: graphql-core's String would print it (`str()`) if it were taken for a value."""


@strawberry.type
class Elder:
    name: str
    nickname: str | None
    mood: Mood
    born: date
    beds: int
    room: Room
    previous_room: Room | None
    garden: Garden
    secret: str = strawberry.field(default="hidden", permission_classes=[Never])

    @strawberry.field
    def greeting(self) -> str:
        return f"您好, {self.name}"


def _elders() -> list[Elder]:
    return [
        Elder(
            name="王秀英",
            nickname=None,
            mood=Mood.CALM,
            born=date(1940, 5, 1),
            beds=1,
            room=Room(number="301", floor=3),
            previous_room=None,
            garden=Garden(label="东园", plants=12),
        ),
        # Wrong on purpose: a null where none may be, an enum value that is no member, a string for an Int.
        Elder(
            name=None,  # type: ignore[arg-type]
            nickname=Gone("erased"),  # type: ignore[arg-type]  # an exception held as the value
            mood="angry",  # type: ignore[arg-type]
            born=date(1938, 1, 2),
            beds="two",  # type: ignore[arg-type]
            room=Room(number=None, floor=2),  # type: ignore[arg-type]
            previous_room=Room(number="101", floor=1),
            garden=Garden(label="西园", plants=3),
        ),
    ]


@strawberry.type
class Query:
    @strawberry.field
    def elders(self) -> list[Elder]:
        return _elders()

    @strawberry.field
    def first(self) -> Elder:
        return _elders()[0]


QUERIES = [
    "{ first { name nickname mood born beds greeting __typename } }",
    "{ first { n: name again: name m: mood } }",
    "{ elders { name nickname mood born beds } }",
    "{ elders { nickname mood } }",
    "{ elders { name } }",
    "{ elders { mood } }",
    "{ elders { beds } }",
    "{ first { room { number floor } previousRoom { number } garden { label plants } } }",
    "{ elders { previousRoom { number floor } } }",
    "{ elders { room { floor } } }",
    "{ elders { room { number } } }",
    "{ elders { nickname room { floor __typename } } }",
    "{ first { name secret } }",
    "query($yes: Boolean!) { first { name @include(if: $yes) mood @skip(if: $yes) } }",
]


def _run(context_class: type, query: str) -> tuple[Any, list[dict[str, Any]]]:
    schema = strawberry.Schema(query=Query, execution_context_class=context_class)
    result = schema.execute_sync(query, variable_values={"yes": True})
    errors = [error.formatted for error in result.errors or []]
    return result.data, sorted(errors, key=repr)


@pytest.mark.parametrize("query", QUERIES)
def test_same_answer_as_graphql_core(query: str) -> None:
    assert _run(YiyangExecutionContext, query) == _run(StrawberryGraphQLCoreExecutionContext, query)


def test_the_cases_above_include_errors() -> None:
    """Guard against a schema change that would make every comparison above trivially error-free."""
    for field in ("name", "nickname", "mood", "beds"):
        _, errors = _run(YiyangExecutionContext, f"{{ elders {{ {field} }} }}")
        assert [error["path"] for error in errors] == [["elders", 1, field]]
    _, nested = _run(YiyangExecutionContext, "{ elders { room { number } } }")
    assert [error["path"] for error in nested] == [["elders", 1, "room", "number"]]
    _, refused = _run(YiyangExecutionContext, "{ first { name secret } }")
    assert refused and refused[0]["message"] == "not for you"
