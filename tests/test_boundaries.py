"""The house's boundaries, checked on the source: plugins reach the core only through
``gateway``'s public API (what ``gateway/__init__.py`` exports; docs/plugins.md), so
the core can move its modules without breaking a third party's plugin built like ours."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway

ROOT = Path(__file__).resolve().parent.parent


def test_plugins_import_only_the_public_api() -> None:
    past_it: list[str] = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("gateway."):
                    past_it.append(f"{where}: from {node.module} import ...")
                elif node.module == "gateway":
                    past_it += [
                        f"{where}: gateway.{a.name} is not exported"
                        for a in node.names
                        if a.name not in gateway.__all__
                    ]
            elif isinstance(node, ast.Import):
                past_it += [
                    f"{where}: import {a.name}" for a in node.names if a.name.startswith("gateway.")
                ]
    assert past_it == [], "plugins past gateway's public API:\n" + "\n".join(past_it)
