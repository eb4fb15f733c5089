"""The shape of the house, checked: no import cycle between jobtable's modules, no SQL and
no dialect branch outside ``jobtable/store/``, no database driver under ``jobtable/worker/``,
and a ``Worker`` that only composes its parts. (SQL is written in capitals here.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "jobtable"
SQL = re.compile(r"\b(SELECT\s.+\sFROM|UPDATE\s+\w+\s+SET|INSERT\s+INTO|DELETE\s+FROM|"
                 r"PRAGMA\s+\w+|LISTEN\s+\w+|NOTIFY\s+\w+)\b", re.DOTALL)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _runtime_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """jobtable modules imported at a module's top level (not under TYPE_CHECKING)."""
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
            out |= subs
            if len(subs) < len(node.names) and node.module in modules:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names} & modules.keys()
    return out


def test_no_import_cycle_between_jobtable_modules() -> None:
    modules = _modules()
    graph = {name: _runtime_imports(path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def _string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef,
                                       ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_no_sql_outside_the_store() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text[:60]!r}"
             for name, path in _modules().items() if not name.startswith("jobtable.store")
             for line, text in _string_constants(path) if SQL.search(text)]
    assert found == []


def test_no_driver_and_no_dialect_branch_outside_the_store() -> None:
    found = []
    for name, path in _modules().items():
        if name.startswith("jobtable.store") or name.startswith("jobtable._extras"):
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Compare) and "dialect" in ast.unparse(node):
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
        if name.startswith("jobtable.worker"):
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                             else [node.module or ""])
                    found += [f"{name}:{node.lineno}: imports {n}" for n in names
                              if n.split(".")[0] in ("psycopg", "psycopg_pool", "sqlite3")]
    assert found == []


def test_the_worker_class_only_composes_its_parts() -> None:
    source = (PACKAGE / "worker" / "worker.py").read_text()
    [worker] = [node for node in ast.parse(source).body
                if isinstance(node, ast.ClassDef) and node.name == "Worker"]
    assert worker.end_lineno is not None
    assert worker.end_lineno - worker.lineno < 150
