"""Executing operations: graphql-core's executor with a short path for plain leaf fields.

Most of a list page's fields are plain attributes (a resident's name, room, care level) that strawberry
resolves without an Info object. graphql-core still makes a path entry and an Info, checks for awaitables
twice and walks its generic value completion for each of them: for `residents(first: 20)` that was a third
of the API's CPU per request. For a field that is a strawberry basic field (no resolver, no extensions)
returning a scalar or an enum, we read the attribute and coerce it as `complete_leaf_value` does; an
object whose selected fields are all such fields, or basic fields holding such objects (a connection's
edge: its cursor and its node), is completed in one loop.

Anything else (a null where none is allowed, a value the scalar refuses, an exception held as the value,
a resolver, an awaitable) takes graphql-core's own path, which also produces the errors: the short path
never decides an outcome of its own. tests/api/test_execution.py checks that both paths give the same
responses, errors included.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLLeafType,
    GraphQLObjectType,
    Undefined,
    is_leaf_type,
    is_non_null_type,
    is_object_type,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import AwaitableOrValue, Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField


@dataclass(frozen=True, slots=True)
class _PlainLeaf:
    read: Callable[[Any, str], Any]  # strawberry's default resolver: getattr unless configured otherwise
    attribute: str
    leaf_type: GraphQLLeafType
    nullable: bool


_NOT_PLAIN = object()  # what the short path answers when graphql-core's path must decide


def _value(leaf: _PlainLeaf, source: Any) -> Any:
    value = leaf.read(source, leaf.attribute)
    if value is None:
        return None if leaf.nullable else _NOT_PLAIN
    if isinstance(value, Exception):  # graphql-core raises it as the field's error
        return _NOT_PLAIN
    try:
        coerced = leaf.leaf_type.coerce_output_value(value)
    except Exception:
        return _NOT_PLAIN  # graphql-core's path reports it as a field error
    return _NOT_PLAIN if coerced is Undefined or coerced is None else coerced


# Per object type, per field name: its plain-leaf plan or None. Built lazily, once per schema object.
_LEAVES: dict[GraphQLObjectType, dict[str, _PlainLeaf | None]] = {}


@dataclass(frozen=True, slots=True)
class _PlainObject:
    """A basic field holding an object, with the selection made of it at this place of the operation."""

    read: Callable[[Any, str], Any]
    attribute: str
    object_type: GraphQLObjectType
    nullable: bool
    details: FieldDetailsList


_Step = tuple[str, _PlainLeaf | _PlainObject]


def _basic_field(parent_type: GraphQLObjectType, field_name: str) -> tuple[StrawberryField, Any, bool] | None:
    """The strawberry definition, named return type and nullability of a basic field, else None."""
    field = parent_type.fields.get(field_name)
    definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF) if field else None
    # A basic field has neither resolver nor extensions (permissions among them): strawberry itself
    # resolves it with its default resolver alone, no Info object, as the short path does.
    if not isinstance(definition, StrawberryField) or not definition.is_basic_field:
        return None
    nullable = not is_non_null_type(field.type)
    named = field.type if nullable else field.type.of_type  # type: ignore[attr-defined]
    return definition, named, nullable


def _plain_object_field(
    parent_type: GraphQLObjectType, field_name: str, details: FieldDetailsList
) -> _PlainObject | None:
    basic = _basic_field(parent_type, field_name)
    if basic is None:
        return None
    definition, named, nullable = basic
    # An is_type_of check (types with interfaces) stays with graphql-core.
    if not is_object_type(named) or named.is_type_of is not None:
        return None
    return _PlainObject(definition.default_resolver, definition.python_name, named, nullable, details)


def _leaf(parent_type: GraphQLObjectType, field_name: str) -> _PlainLeaf | None:
    known = _LEAVES.setdefault(parent_type, {})
    try:
        return known[field_name]
    except KeyError:
        leaf = known[field_name] = _plain_leaf(parent_type, field_name)
        return leaf


def _plain_leaf(parent_type: GraphQLObjectType, field_name: str) -> _PlainLeaf | None:
    basic = _basic_field(parent_type, field_name)
    if basic is None:
        return None
    definition, named, nullable = basic
    if not is_leaf_type(named):
        return None
    return _PlainLeaf(definition.default_resolver, definition.python_name, named, nullable)


class YiyangExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Extensions with a `resolve` hook become middleware that must see every field.
        self._short_path = not (self.middleware_manager and self.middleware_manager.middlewares)
        # Per selection set of this operation (graphql-core keeps each one alive while it runs): its steps
        # when every selected field can take the short path, else None.
        self._plain_objects: dict[int, tuple[GroupedFieldSet, tuple[_Step, ...] | None]] = {}

    def _plain_object(
        self, parent_type: GraphQLObjectType, grouped_field_set: GroupedFieldSet
    ) -> tuple[_Step, ...] | None:
        known = self._plain_objects.get(id(grouped_field_set))
        if known is not None and known[0] is grouped_field_set:
            return known[1]
        steps: list[_Step] | None = []
        for response_name, details in grouped_field_set.items():
            name = details[0].node.name.value
            step = _leaf(parent_type, name) or _plain_object_field(parent_type, name, details)
            if step is None:
                steps = None
                break
            steps.append((response_name, step))
        plain = tuple(steps) if steps is not None else None
        self._plain_objects[id(grouped_field_set)] = (grouped_field_set, plain)
        return plain

    def _complete(self, steps: tuple[_Step, ...], source: Any) -> Any:
        """The completed object, or _NOT_PLAIN if any of it must take graphql-core's path."""
        results: dict[str, Any] = {}
        for response_name, step in steps:
            if isinstance(step, _PlainLeaf):
                value = _value(step, source)
            else:
                value = self._complete_object_field(step, source)
            if value is _NOT_PLAIN:
                return _NOT_PLAIN
            results[response_name] = value
        return results

    def _complete_object_field(self, field: _PlainObject, source: Any) -> Any:
        value = field.read(source, field.attribute)
        if value is None:
            return None if field.nullable else _NOT_PLAIN
        if self.is_awaitable(value):
            return _NOT_PLAIN
        grouped_field_set, deferred, _ = self.collect_subfields(field.object_type, field.details)
        steps = None if deferred else self._plain_object(field.object_type, grouped_field_set)
        return _NOT_PLAIN if steps is None else self._complete(steps, value)

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> AwaitableOrValue[dict[str, Any]]:
        steps = self._plain_object(parent_type, grouped_field_set) if self._short_path else None
        if steps is not None:
            completed = self._complete(steps, source_value)
            if completed is not _NOT_PLAIN:
                return completed
        return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        leaf = _leaf(parent_type, field_details_list[0].node.name.value) if self._short_path else None
        if leaf is not None:
            value = _value(leaf, source)
            if value is not _NOT_PLAIN:
                return value
        return super().execute_field(parent_type, source, field_details_list, path, position_context)
