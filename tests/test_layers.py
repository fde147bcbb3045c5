"""The dependency rule of docs/architecture.md, checked on the source: imports point down
(entry layers -> domain packages -> core -> trainer), domain packages import no FastAPI, the
trainer imports nothing of the service, and the packages import each other without cycles."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lower rank = lower layer. A module may import from its own package and from packages of a
# lower rank; `service/__init__.py` (the version) counts as core.
RANKS = {
    "trainer": 0,
    "service.core": 1,
    # What the service sends out (webhooks, MLflow runs): called by the domain packages
    # that decide an event, it reads only core's tables.
    "service.integrations": 1.5,
    # The domain packages, in their own order: a study's spec names a dataset, a trial
    # belongs to a study, the analysis reads studies and trials' curves.
    "service.access": 2.0,
    "service.datasets": 2.1,
    "service.studies": 2.2,
    "service.scheduling": 2.3,
    "service.analysis": 2.4,
    "service.trials": 2.5,
    "service.app": 3,
    "service.worker": 3,
    "service.client": 3,  # the public REST client: imports none of the server
    "service.cli": 4,
}
DOMAIN_RANK = 2.5
FRAMEWORKS = ("fastapi", "starlette", "uvicorn")

# Known violations, each to be removed when fixed; the list must only shrink.
ALLOWED: set[tuple[str, str]] = {}
ALLOWED_FRAMEWORK: set[str] = set()
ALLOWED_CYCLES: set[str] = set()


def package_of(module: str) -> str:
    if module == "service" or module.startswith("service.__"):
        return "service.core"
    for name in sorted(RANKS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    raise AssertionError(f"{module} belongs to no layer; add its package to RANKS")


def modules() -> dict[str, Path]:
    out = {}
    for top in ("service", "trainer"):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(path: Path, module: str) -> set[str]:
    """Every module this file imports, at any depth (imports inside functions count)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def edges() -> list[tuple[str, str, str]]:
    """(importing module, imported module, imported package) for our own modules."""
    mods = modules()
    out = []
    for module, path in mods.items():
        for target in imports_of(path, module):
            if target in mods:
                out.append((module, target, package_of(target)))
    return out


def test_imports_point_down() -> None:
    upward = []
    for module, target, target_pkg in edges():
        pkg = package_of(module)
        if pkg == target_pkg:
            continue
        if RANKS[target_pkg] >= RANKS[pkg] and (module, target) not in ALLOWED:
            upward.append(f"{module} -> {target}")
    assert not upward, "imports that do not point down:\n" + "\n".join(sorted(upward))


def test_domain_packages_and_trainer_import_no_web_framework() -> None:
    offenders = []
    for module, path in modules().items():
        if RANKS[package_of(module)] > DOMAIN_RANK or module in ALLOWED_FRAMEWORK:
            continue
        for target in imports_of(path, module):
            if target.split(".")[0] in FRAMEWORKS:
                offenders.append(f"{module} -> {target}")
    assert not offenders, "\n".join(sorted(offenders))


def test_trainer_knows_no_service_database_or_optuna() -> None:
    offenders = []
    for module, path in modules().items():
        if package_of(module) != "trainer":
            continue
        for target in imports_of(path, module):
            if target.split(".")[0] in ("service", "sqlalchemy", "optuna", *FRAMEWORKS):
                offenders.append(f"{module} -> {target}")
    assert not offenders, "\n".join(sorted(offenders))


def test_no_import_cycles_between_modules() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, target, _ in edges():
        if module != target and not module.startswith(target + "."):
            graph[module].add(target)
    cycles = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(list(graph)):
        if node not in state:
            visit(node, [])
    cycles = [c for c in cycles if c not in ALLOWED_CYCLES]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_client_imports_nothing_of_the_service_but_itself() -> None:
    """`service.client` runs where only a URL is known (a notebook): no server code, no
    database, no torch."""
    offenders = []
    for module, path in modules().items():
        if package_of(module) != "service.client":
            continue
        for target in imports_of(path, module):
            top = target.split(".")[0]
            if top in ("trainer", "sqlalchemy", "optuna", "torch", *FRAMEWORKS) or (
                top == "service" and not target.startswith("service.client")
            ):
                offenders.append(f"{module} -> {target}")
    assert not offenders, "\n".join(sorted(offenders))


def test_the_rule_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a domain module importing the app is reported."""
    src = tmp_path / "m.py"
    src.write_text("from service.app.main import create_app\nimport fastapi\n")
    found = imports_of(src, "service.studies.m")
    assert "service.app.main" in found and "fastapi" in found
    assert RANKS[package_of("service.app.main")] > RANKS[package_of("service.studies.m")]
