"""What a wheel would install works on its own: the source distribution carries the policies and migrations
(MANIFEST.in), the build step (``setup.py``'s build_py, the files that go into the wheel) bundles them, and
from that build alone, outside the checkout, the database migrates to head and every policy compiles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("gateway", "connectors", "audit", "escalation", "policies", "migrations")

_CHECK = """
import sys
import tarfile
from pathlib import Path
from alembic import command
import gateway
from gateway.db.engine import MIGRATIONS_DIR, alembic_config
from gateway.settings import POLICIES_DIR, SHIPPED_REGISTER
from gateway.register.loader import load_register
from gateway.policy.engine import EmbeddedPolicyEngine
from gateway.register.service import register_digest

build = Path(sys.argv[1]).resolve()
for where in (Path(gateway.__file__), MIGRATIONS_DIR, POLICIES_DIR):
    assert build in where.resolve().parents, f"{where} is not from the build"
command.upgrade(alembic_config(f"sqlite:///{sys.argv[2]}"), "head")
register = load_register(SHIPPED_REGISTER)[0].model_dump(mode="json")
EmbeddedPolicyEngine(POLICIES_DIR, register, register_digest(register))  # compiles every policy, or raises
print("policies compiled from", POLICIES_DIR.relative_to(build))
"""


def _copy_sources(tree: Path) -> None:
    """The checkout's files a source distribution is made from (not the checkout itself: building writes
    next to its sources)."""
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    for name in SOURCES:
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _build(cwd: Path, *args: str) -> None:
    subprocess.run([sys.executable, "setup.py", "--quiet", *args], cwd=cwd, check=True, capture_output=True,
                   timeout=300)


def test_a_package_built_from_the_sdist_carries_its_policies_and_migrations_and_works_outside_the_checkout(
        tmp_path: Path) -> None:
    """Checkout → sdist → build (what `python -m build` and `pip install wgs-gateway-*.tar.gz` do)."""
    tree, dist, build, elsewhere = (tmp_path / name for name in ("src", "dist", "build", "elsewhere"))
    tree.mkdir()
    elsewhere.mkdir()
    _copy_sources(tree)
    _build(tree, "sdist", "--dist-dir", str(dist))
    (archive,) = dist.glob("*.tar.gz")
    with tarfile.open(archive) as sdist:
        sdist.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    _build(unpacked, "build_py", "--build-lib", str(build))
    bundled = build / "gateway" / "_bundled"
    assert (bundled / "policies" / "exchange.rego").is_file()
    assert (bundled / "migrations" / "env.py").is_file()
    assert sorted(p.name for p in (bundled / "migrations" / "versions").glob("*.py")) == sorted(
        p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert not (build / "policies").exists()  # nothing of it lands at the top of site-packages

    env = {k: v for k, v in os.environ.items() if not k.startswith("WGS_")} | {"PYTHONPATH": str(build)}
    done = subprocess.run([sys.executable, "-c", _CHECK, str(build), str(elsewhere / "gateway.sqlite")],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "policies compiled from gateway/_bundled/policies" in done.stdout
