"""Runs Rego unit tests (``test_*`` rules in ``*_test.rego``) with the embedded engine, as OPA's
``opa test`` would: every policy module plus every test module, the register as ``data.register``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regorus

from gateway.register.service import register_digest

_PACKAGE = re.compile(r"^package\s+(\S+)", re.MULTILINE)
_TEST = re.compile(r"^(test_\w+)\b", re.MULTILINE)


@dataclass(frozen=True)
class RegoTest:
    file: str
    package: str
    name: str

    @property
    def rule(self) -> str:
        return f"data.{self.package}.{self.name}"


def discover(directory: Path) -> list[RegoTest]:
    tests = []
    for path in sorted(directory.glob("*_test.rego")):
        text = path.read_text()
        package = _PACKAGE.search(text)
        if package is None:
            raise ValueError(f"{path.name}: no package")
        tests += [RegoTest(path.name, package.group(1), name) for name in dict.fromkeys(_TEST.findall(text))]
    return tests


def engine_with_tests(directories: list[Path], register: dict[str, Any]) -> Any:
    engine = regorus.Engine()
    for directory in directories:
        for path in sorted(directory.glob("*.rego")):
            engine.add_policy(str(path), path.read_text())
    engine.add_data_json(json.dumps({"register": register | {"sha256": register_digest(register)}}))
    return engine


def passes(engine: Any, test: RegoTest) -> bool:
    """True only when the rule is defined and exactly ``true`` (undefined or an error is a failure)."""
    try:
        return engine.eval_rule(test.rule) is True
    except RuntimeError:
        return False
