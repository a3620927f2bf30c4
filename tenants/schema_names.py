"""Tenant schema names: generated here, validated here, quoted here.

A schema name is interpolated into DDL and into `SET LOCAL search_path`, which take no bind parameters,
so the only defence against injection is that every name is produced by the registry and checked against
a strict pattern before it is quoted.
"""

import re
import secrets

SHARED_SCHEMA = "shared"
_TENANT_SCHEMA = re.compile(r"^t_[a-z0-9_]{1,40}$")


class InvalidSchemaName(ValueError):
    pass


def new_schema_name() -> str:
    return f"t_{secrets.token_hex(5)}"


def validate_schema_name(name: str) -> str:
    if not isinstance(name, str) or not _TENANT_SCHEMA.fullmatch(name):
        raise InvalidSchemaName(f"not a tenant schema name: {name!r}")
    return name


def quote_schema(name: str) -> str:
    """The identifier, validated and double-quoted for use in SQL text."""
    return f'"{validate_schema_name(name)}"'


def tenant_search_path(name: str) -> str:
    return f"{quote_schema(name)}, {SHARED_SCHEMA}"
