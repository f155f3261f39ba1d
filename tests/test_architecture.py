"""The allowed import directions (docs/architecture.md), checked on the source: an import that breaks one fails."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRONT = {"serve.app", "serve.endpoints", "serve.inference", "serve.auth", "serve.http", "serve.body", "serve.openapi",
         "serve.__main__", "serve.shutdown", "serve.grpc"}  # fmt: skip
"""The front ends (REST modules, the gRPC package): the only serve modules that may know a transport."""
FRAMEWORKS = ("starlette", "uvicorn", "grpc", "google.protobuf")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules(package: str) -> dict[str, set[str]]:
    return {
        f"{package}.{path.stem}": imports(path)
        for path in sorted((ROOT / package).glob("*.py"))
        if path.stem != "__init__"
    }


def within(name: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def test_the_contract_needs_only_the_standard_library() -> None:
    outside = {name for name in imports(ROOT / "contract.py") if name.split(".")[0] not in sys.stdlib_module_names}
    assert outside == set()


@pytest.mark.parametrize(("package", "forbidden"), [("export", ("serve",)), ("serve", ("export",))])
def test_export_and_serve_meet_only_in_the_contract(package: str, forbidden: tuple[str, ...]) -> None:
    crossing = {
        module: sorted(name for name in names if within(name, forbidden)) for module, names in modules(package).items()
    }
    assert {module: names for module, names in crossing.items() if names} == {}


def test_the_core_knows_nothing_of_http() -> None:
    core = {module: names for module, names in modules("serve").items() if module not in FRONT}
    assert len(core) >= 15, "the core modules were found"
    leaks = {
        module: sorted(name for name in names if within(name, FRAMEWORKS) or within(name, FRONT))
        for module, names in core.items()
    }
    assert {module: names for module, names in leaks.items() if names} == {}


@pytest.mark.parametrize("module", ["batching", "execution"])
def test_the_batcher_is_generic_over_what_it_runs(module: str) -> None:
    names = imports(ROOT / "serve" / f"{module}.py")
    assert names, module
    assert not any(within(name, ("serve.model", "serve.protocol", "serve.feeds", "onnxruntime")) for name in names)
