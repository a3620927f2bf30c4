"""Every message the domain raises has its Simplified Chinese translation: Chinese first, English second."""

import ast
from pathlib import Path

from babel.messages.pofile import read_po

from api.settings import REPO_ROOT
from tenants import errors

PACKAGES = ("api", "schema", "tenants", "care", "compliance", "payments", "workers")
ERROR_NAMES = {
    name
    for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, errors.DomainError)
} | {"LoginFailed"}


def _raised_messages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name not in ERROR_NAMES:
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.add(first.value)
        elif isinstance(first, ast.Name) and first.id in constants:
            found.add(constants[first.id])
    return found


def test_every_raised_message_is_translated() -> None:
    with (REPO_ROOT / "schema" / "locale" / "zh_CN.po").open("rb") as catalog_file:
        catalog = read_po(catalog_file)
    translated = {message.id for message in catalog if message.id and message.string}
    raised = {
        message
        for package in PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
        for message in _raised_messages(path)
    }
    assert len(raised) > 20  # the scan found the domain's messages at all
    assert sorted(raised - translated) == []
