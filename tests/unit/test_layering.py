"""The import rules of DESIGN.md ("Layers inside the controller"), checked on the source tree.

Every ``import`` and ``from ... import`` statement is read with ``ast`` (function-level imports
included), so a forbidden import fails here however it is written. The rules:

- ``node_agent``, ``common`` and ``proto`` import nothing of ``controller`` or ``bots``, and
  only third-party libraries that the agent-only install (``vpnbot[agent]``) brings; ``common``
  and ``proto`` not even ``node_agent``.
- ``controller/domain`` imports only the standard library and itself.
- ``controller/nodes`` never imports ``controller.services`` (the hub reaches use cases
  through ports).
- ``bots`` and ``controller/cli`` never import ``controller.db`` (services return views).
- ``controller`` imports ``bots`` at one composition point only.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"common", "controller", "bots", "node_agent", "proto", "tests", "benchmarks"}
# Where the controller process is assembled from its parts, bots included.
BOTS_COMPOSITION_POINT = "controller/server.py"
# Dev-only tooling inside the agent's packages, with the one dev import each may make.
DEV_TOOLS = {"proto/generate.py": {"grpc_tools"}}


@dataclass(frozen=True, slots=True)
class Import:
    path: str  # relative to the repository, with forward slashes
    line: int
    module: str  # the absolute dotted name imported


@dataclass(frozen=True, slots=True)
class Violation:
    where: Import
    rule: str

    def __str__(self) -> str:
        return f"{self.where.path}:{self.where.line}: imports {self.where.module} ({self.rule})"


def imports_in(root: Path, package: str) -> Iterator[Import]:
    for file in sorted((root / package).rglob("*.py")):
        relative = file.relative_to(root).as_posix()
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=relative)
        module_parts = relative.removesuffix(".py").split("/")
        if module_parts[-1] == "__init__":
            module_parts.pop()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(relative, node.lineno, alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against the importing module's package
                    base = module_parts[: len(module_parts) - node.level]
                    if relative.endswith("__init__.py"):
                        base = module_parts[: len(module_parts) - node.level + 1]
                    name = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    name = node.module or ""
                if name == "__future__":
                    continue
                yield Import(relative, node.lineno, name)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _agent_distributions() -> set[str]:
    """Normalised names of every distribution the agent-only install brings (the closure)."""

    def requirements(dist: str, extras: set[str]) -> set[str]:
        found: set[str] = set()
        for spec in metadata.requires(dist) or []:
            name, _, marker = spec.partition(";")
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if extra and extra.group(1) not in extras:
                continue
            if marker.strip() and not extra and "python_version" not in marker:
                continue  # platform-specific extras of dependencies: not needed to decide
            match = re.match(r"[A-Za-z0-9._-]+", name.strip())
            if match:
                found.add(_normalise(match.group(0)))
        return found

    closure: set[str] = set()
    todo = [("vpnbot", {"agent"})]
    while todo:
        dist, extras = todo.pop()
        for name in requirements(dist, extras):
            if name not in closure and name != "vpnbot":
                closure.add(name)
                try:
                    metadata.distribution(name)
                except metadata.PackageNotFoundError:
                    continue
                todo.append((name, set()))
    return closure


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check(root: Path, agent_distributions: set[str]) -> list[Violation]:
    """Every import in ``root`` that breaks a rule."""
    providers = {
        top: {_normalise(d) for d in dists}
        for top, dists in metadata.packages_distributions().items()
    }
    stdlib = sys.stdlib_module_names
    violations: list[Violation] = []

    def third_party(module: str) -> bool:
        top = module.split(".")[0]
        return top not in stdlib and top not in FIRST_PARTY

    for package in ("node_agent", "common", "proto"):
        allowed_first_party = {"node_agent": {"node_agent", "common", "proto"}}.get(
            package, {package}
        )
        for imp in imports_in(root, package):
            top = imp.module.split(".")[0]
            if top in FIRST_PARTY and top not in allowed_first_party:
                violations.append(Violation(imp, f"{package} may not import {top}"))
            elif (
                third_party(imp.module)
                and top not in DEV_TOOLS.get(imp.path, set())
                and not providers.get(top, set()) & agent_distributions
            ):
                violations.append(Violation(imp, f"{top} is not installed by vpnbot[agent]"))
    for imp in imports_in(root, "controller"):
        if (
            imp.path.startswith("controller/domain/")
            and imp.module.split(".")[0] not in stdlib
            and not _within(imp.module, "controller.domain")
        ):
            violations.append(Violation(imp, "domain imports only the standard library"))
        if imp.path.startswith("controller/nodes/") and _within(imp.module, "controller.services"):
            violations.append(Violation(imp, "nodes never imports services: use a port"))
        if imp.path.startswith("controller/cli/") and _within(imp.module, "controller.db"):
            violations.append(Violation(imp, "the CLI goes through services, not the database"))
        if _within(imp.module, "bots") and imp.path != BOTS_COMPOSITION_POINT:
            violations.append(
                Violation(imp, f"controller imports bots only in {BOTS_COMPOSITION_POINT}")
            )
    for imp in imports_in(root, "bots"):
        if _within(imp.module, "controller.db"):
            violations.append(Violation(imp, "bots get views from services, not ORM rows"))
    return violations


@pytest.fixture(scope="module")
def agent_distributions() -> set[str]:
    closure = _agent_distributions()
    assert {"grpcio", "protobuf", "cryptography", "psutil", "pyroute2", "httpx"} <= closure
    return closure


# Imports that break a rule today and are being removed (issue 12, item 4: services return
# views to the CLI and the bots). The list may only shrink: a new violation fails, and so does
# an entry that no longer occurs (delete it).
PENDING = {
    ("controller/cli/db.py", "controller.db"),
    ("controller/cli/db.py", "controller.db.engine"),
    ("controller/cli/main.py", "controller.db.engine"),
    ("controller/cli/main.py", "controller.db.migrate"),
    ("controller/cli/manage.py", "controller.db.models"),
    ("controller/cli/nodes.py", "controller.db.models"),
    ("bots/client/handlers/subscription.py", "controller.db.models"),
    ("bots/common/context.py", "controller.db.models"),
}


def test_the_tree_keeps_the_layering_contract(agent_distributions: set[str]) -> None:
    violations = check(ROOT, agent_distributions)
    new = [v for v in violations if (v.where.path, v.where.module) not in PENDING]
    assert not new, "\n".join(map(str, new))
    gone = PENDING - {(v.where.path, v.where.module) for v in violations}
    assert not gone, f"no longer imported, remove from PENDING: {sorted(gone)}"


def test_the_agent_install_brings_nothing_of_the_controller(
    agent_distributions: set[str],
) -> None:
    for name in ("aiogram", "fastapi", "sqlalchemy", "asyncpg", "redis", "alembic", "uvicorn"):
        assert name not in agent_distributions


FORBIDDEN = [
    ("node_agent/agent.py", "from controller.db.models import User", "node_agent may not"),
    ("node_agent/x.py", "import sqlalchemy", "not installed by vpnbot[agent]"),
    ("node_agent/x.py", "def f():\n    from aiogram import Bot", "not installed by vpnbot[agent]"),
    ("common/tasks.py", "from node_agent import model", "common may not import node_agent"),
    ("proto/x.py", "import controller.settings", "proto may not import controller"),
    ("controller/domain/rules.py", "import sqlalchemy as sa", "domain imports only"),
    ("controller/domain/rules.py", "from controller.db import models", "domain imports only"),
    ("controller/nodes/hub.py", "from controller.services import Services", "nodes never"),
    ("controller/nodes/hub.py", "import controller.services.usage", "nodes never"),
    ("controller/nodes/sub/x.py", "from ...services import base", "nodes never"),
    ("controller/cli/users.py", "from controller.db.models import User", "the CLI goes"),
    ("controller/services/users.py", "from bots.runtime import build_bots", "imports bots only"),
    ("bots/client/x.py", "from controller.db.models import SubscriptionPlan", "bots get views"),
    ("bots/client/x.py", "import controller.db.uow", "bots get views"),
]


@pytest.mark.parametrize(("path", "source", "rule"), FORBIDDEN)
def test_a_forbidden_import_is_caught(
    tmp_path: Path, agent_distributions: set[str], path: str, source: str, rule: str
) -> None:
    for package in ("node_agent", "common", "proto", "controller", "bots"):
        (tmp_path / package).mkdir()
    file = tmp_path / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(f"from __future__ import annotations\n\n{source}\n")
    violations = check(tmp_path, agent_distributions)
    assert [v.where.path for v in violations] == [path]
    assert rule in violations[0].rule


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("node_agent/x.py", "import grpc\nfrom common.proc import run_command\nimport proto"),
        ("node_agent/x.py", "import psutil\nimport pyroute2\nimport httpx\nimport structlog"),
        ("controller/domain/x.py", "import datetime\nfrom controller.domain import enums"),
        ("controller/nodes/x.py", "from controller.db.uow import UnitOfWork"),
        ("controller/server.py", "from bots.runtime import build_bots"),
        ("bots/x.py", "from controller.services import Services"),
        ("proto/generate.py", "def main():\n    from grpc_tools import protoc"),
    ],
)
def test_an_allowed_import_passes(
    tmp_path: Path, agent_distributions: set[str], path: str, source: str
) -> None:
    file = tmp_path / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(source + "\n")
    for package in ("node_agent", "common", "proto", "controller", "bots"):
        (tmp_path / package).mkdir(exist_ok=True)
    assert check(tmp_path, agent_distributions) == []
