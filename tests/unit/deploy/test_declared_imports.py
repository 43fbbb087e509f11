"""Every third-party package our code imports is declared in pyproject.toml, in the group that installs it.

Why: a package that only arrives because another one requires it (llvmlite under numba, starlette under
fastapi, pydantic-core under pydantic) disappears or changes major version when that one changes its own
requirements, and the gateway breaks on an install that pip considered correct. Code that ships in the wheel
(the packages of ``[tool.setuptools.packages.find]`` and the bundled migrations) may rely only on
``[project] dependencies``; tests, scripts and benchmarks also on the ``test`` extra.

An import inside ``try: ... except ImportError`` is optional by construction and need not be declared; so are
the few packages of ``OPTIONAL``, each used only after checking that it is installed.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OPTIONAL = {  # module -> why it is not a dependency
    "anonlink": "bench/bench_matching.py runs it beside our matcher only when find_spec finds it (README)",
    "bitarray": "anonlink's input format, built only when anonlink runs",
}
BUNDLED = ("migrations",)  # setup.py copies them into the wheel: they run in the gateway's environment


def _declared(lines: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in lines}


RUNTIME = _declared(PYPROJECT["project"]["dependencies"])
TEST = RUNTIME | _declared(PYPROJECT["project"]["optional-dependencies"]["test"])


def _code_roots() -> tuple[list[str], list[str]]:
    """(roots shipped in the wheel, every other top-level directory holding Python code)."""
    shipped = [pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
    shipped = sorted({name.rstrip(".") for name in shipped} | set(BUNDLED))
    others = sorted(path.name for path in ROOT.iterdir()
                    if path.is_dir() and not path.name.startswith(".") and path.name not in shipped
                    and any(path.rglob("*.py")))
    return shipped, others


def _first_party() -> set[str]:
    return {path.stem if path.suffix == ".py" else path.name for path in ROOT.iterdir()
            if path.suffix == ".py" or (path.is_dir() and any(path.glob("*.py")))}


def _guarded_by_import_error(handlers: list[ast.ExceptHandler]) -> bool:
    names: list[ast.expr] = []
    for handler in handlers:
        if handler.type is None:
            return True
        names += handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(name, ast.Name) and name.id in {"ImportError", "ModuleNotFoundError"} for name in names)


def _imports(tree: ast.AST, optional: bool = False) -> Iterator[tuple[str, int, bool]]:
    """(top-level module, line, whether the import is optional) of every absolute import in ``tree``."""
    if isinstance(tree, ast.Import):
        for alias in tree.names:
            yield alias.name.partition(".")[0], tree.lineno, optional
    elif isinstance(tree, ast.ImportFrom) and tree.level == 0 and tree.module:
        yield tree.module.partition(".")[0], tree.lineno, optional
    elif isinstance(tree, ast.Try):
        guarded = optional or _guarded_by_import_error(tree.handlers)
        for node in tree.body:
            yield from _imports(node, guarded)
        for after in [*tree.handlers, *tree.orelse, *tree.finalbody]:
            yield from _imports(after, optional)
    else:
        for child in ast.iter_child_nodes(tree):
            yield from _imports(child, optional)


def _undeclared(roots: list[str], declared: set[str]) -> list[str]:
    distributions = packages_distributions()
    ours = _first_party()
    found = []
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for module, line, optional in _imports(tree):
                if optional or module in OPTIONAL or module in sys.stdlib_module_names or module in ours:
                    continue
                providers = {canonicalize_name(name) for name in distributions.get(module, [])}
                if not providers & declared:
                    where = f"{path.relative_to(ROOT)}:{line}"
                    found.append(f"{where}: {module} (installed by {sorted(providers) or 'nothing'})")
    return found


def test_the_roots_cover_the_shipped_packages_and_the_rest() -> None:
    shipped, others = _code_roots()
    assert {"gateway", "connectors", "audit", "escalation", "migrations"} <= set(shipped)
    assert {"tests", "scripts", "bench"} <= set(others)


def test_shipped_code_imports_only_runtime_dependencies() -> None:
    shipped, _ = _code_roots()
    assert _undeclared(shipped, RUNTIME) == []


def test_tests_scripts_and_benchmarks_import_only_declared_packages() -> None:
    _, others = _code_roots()
    assert _undeclared(others, TEST) == []


def test_an_undeclared_or_optional_import_is_told_apart(tmp_path: Path) -> None:
    """The checker itself: a transitive-only package is reported, an ImportError-guarded one is not."""
    tree = ast.parse("import numba\nfrom llvmlite import ir\ntry:\n    import anonlink\nexcept ImportError:\n"
                     "    anonlink = None\n")
    assert list(_imports(tree)) == [("numba", 1, False), ("llvmlite", 2, False), ("anonlink", 4, True)]
    assert "llvmlite" not in _declared(["numba>=0.60"])


def test_the_readme_says_why_for_every_declared_dependency() -> None:
    """README's "Dependencies and why" names each dependency of pyproject (either group) in its first column."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Dependencies and why", 1)[1].split("\n## ", 1)[0]
    listed = {canonicalize_name(name.strip()) for row in table.splitlines() if row.startswith("| ")
              for name in row.split("|")[1].split(",")}
    assert sorted(TEST - listed) == []
