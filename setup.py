"""Packaging hook (the project's metadata is in pyproject.toml): a built wheel carries ``policies/`` and
``migrations/`` inside the ``gateway`` package, under ``gateway/_bundled/``.

Why: both live at the top of the checkout, where operators, the OPA server's bundle (docker-compose) and
Alembic expect them, but a wheel holds packages only. Without this a non-editable ``pip install`` got a
gateway without its policies and migrations. ``gateway.resources`` finds them in either place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("policies", "migrations")


class BuildPyWithPoliciesAndMigrations(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout
        target = Path(self.build_lib) / "gateway" / "_bundled"
        for name in BUNDLED:
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(Path(__file__).parent / name, target / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithPoliciesAndMigrations})
