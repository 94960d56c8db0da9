"""routing/ stays pure: importing it loads none of the service libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROUTING = Path(__file__).resolve().parents[2] / "routing"
FORBIDDEN = ("celery", "kombu", "sqlalchemy", "httpx", "redis", "openai", "anthropic", "psycopg")


def test_routing_source_imports_no_service_library() -> None:
    offenders = []
    for path in ROUTING.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_every_routing_module_loads_no_service_library() -> None:
    modules = [f"tierflow.routing.{p.stem}" for p in ROUTING.glob("*.py") if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
