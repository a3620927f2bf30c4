"""Counting what a bulk read costs: the SQL statements a care module sends through its `_execute`, and the
data-key queries of a field cipher that has read no key yet (as in a new request)."""

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import pytest

from compliance.encryption import FieldCipher, field_cipher


async def counted(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> tuple[FieldCipher, list[str]]:
    """(the unit of work's cipher, its data keys forgotten; the list every statement of `module._execute`
    is appended to from now on). Compare `cipher.queries` before and after the read."""
    cipher = await field_cipher()
    cipher._loaded.clear()
    statements: list[str] = []
    original = module._execute

    async def recording(sql: str, parameters: Sequence[object]) -> list[dict[str, Any]]:
        statements.append(sql)
        return await original(sql, parameters)

    monkeypatch.setattr(module, "_execute", recording)
    return cipher, statements
