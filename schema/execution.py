"""Executing operations: graphql-core's executor with a short path for plain leaf fields.

Most of a list page's fields are plain attributes (a resident's name, room, care level) that strawberry
resolves without an Info object. graphql-core still builds an Info, checks for awaitables twice and walks
its generic value completion for each of them: for `residents(first: 20)` that was a third of the API's CPU
per request. For a field that is a strawberry basic field (no resolver, no extensions) returning a scalar
or an enum, we read the attribute and coerce it the way `complete_leaf_value` does. Anything else (a null
where none is allowed, a value the scalar refuses, a resolver, an awaitable) takes graphql-core's own
path, which also produces its errors: the short path never decides an outcome of its own.

tests/api/test_execution.py checks that both paths give the same responses, errors included.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLLeafType, GraphQLObjectType, Undefined, is_leaf_type, is_non_null_type
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField


@dataclass(frozen=True, slots=True)
class _PlainLeaf:
    read: Callable[[Any, str], Any]  # strawberry's default resolver: getattr unless configured otherwise
    attribute: str
    leaf_type: GraphQLLeafType
    nullable: bool


# Per object type, per field name: its plain-leaf plan or None. Built lazily, once per schema object.
_PLANS: dict[GraphQLObjectType, dict[str, _PlainLeaf | None]] = {}


def _plan(parent_type: GraphQLObjectType, field_name: str) -> _PlainLeaf | None:
    field = parent_type.fields.get(field_name)
    definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF) if field else None
    # A basic field has neither resolver nor extensions (permissions among them): strawberry itself
    # resolves it with its default resolver alone, no Info object, as `_PlainLeaf.read` does here.
    if not isinstance(definition, StrawberryField) or not definition.is_basic_field:
        return None
    return_type = field.type
    nullable = not is_non_null_type(return_type)
    named = return_type if nullable else return_type.of_type  # type: ignore[attr-defined]
    if not is_leaf_type(named):
        return None
    return _PlainLeaf(
        read=definition.default_resolver, attribute=definition.python_name, leaf_type=named, nullable=nullable
    )


class YiyangExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Extensions with a `resolve` hook become middleware that must see every field.
        self._short_path = not (self.middleware_manager and self.middleware_manager.middlewares)

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        field_name = field_details_list[0].node.name.value
        plans = _PLANS.get(parent_type)
        if plans is None:
            plans = _PLANS[parent_type] = {}
        try:
            plan = plans[field_name]
        except KeyError:
            plan = plans[field_name] = _plan(parent_type, field_name)
        if plan is not None and self._short_path:
            value = plan.read(source, plan.attribute)
            if value is None:
                if plan.nullable:
                    return None
            elif not self.is_awaitable(value):
                try:
                    coerced = plan.leaf_type.coerce_output_value(value)
                except Exception:
                    coerced = Undefined  # graphql-core's path below reports it as a field error
                if coerced is not Undefined and coerced is not None:
                    return coerced
        return super().execute_field(parent_type, source, field_details_list, path, position_context)
