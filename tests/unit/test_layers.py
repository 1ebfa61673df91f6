"""design.md's layer rules, checked on every module's imports: imports only point down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "payout_gateway"

# layer -> what it must never import (module prefixes)
FORBIDDEN = {
    "domain": (
        "strawberry",
        "httpx",
        "fastapi",
        "sqlalchemy",
        "payout_gateway.providers",
        "payout_gateway.store",
        "payout_gateway.graphql",
        "payout_gateway.web",
        "payout_gateway.events",
        "payout_gateway.service",
    ),
    "providers": (
        "strawberry",
        "fastapi",
        "sqlalchemy",
        "payout_gateway.store",
        "payout_gateway.graphql",
        "payout_gateway.web",
        "payout_gateway.events",
        "payout_gateway.service",
        "payout_gateway.sandbox",
    ),
    "graphql": (
        "httpx",
        "payout_gateway.providers",
        "payout_gateway.sandbox",
        "payout_gateway.store",
    ),
    "store": (
        "strawberry",
        "httpx",
        "fastapi",
        "payout_gateway.providers",
        "payout_gateway.graphql",
        "payout_gateway.web",
        "payout_gateway.service",
    ),
    "sandbox": (
        "payout_gateway.providers",
        "payout_gateway.store",
        "payout_gateway.graphql",
        "payout_gateway.service",
        "payout_gateway.web",
    ),
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_down(layer: str) -> None:
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for module in imports_of(path):
            if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN[layer]):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not offenders, "\n".join(offenders)
