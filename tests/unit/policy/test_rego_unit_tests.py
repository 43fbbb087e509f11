"""Every Rego unit test in policies/ runs here, one pytest case each; and the harness itself is shown to
catch a failing Rego test, so a green run means something."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.register.loader import load_register
from gateway.settings import POLICIES_DIR, SHIPPED_REGISTER
from tests.rego_harness import RegoTest, discover, engine_with_tests, passes

REGISTER = load_register(SHIPPED_REGISTER)[0].model_dump(mode="json")
TESTS = discover(POLICIES_DIR)
_local = threading.local()


def _engine() -> Any:
    # regorus engines must stay on the thread that made them; pytest runs tests on one thread.
    if not hasattr(_local, "engine"):
        _local.engine = engine_with_tests([POLICIES_DIR], REGISTER)
    return _local.engine


def test_there_are_rego_tests_for_every_policy_package() -> None:
    packages = {t.package for t in TESTS}
    assert {"wgs.exchange_test", "wgs.discovery_test", "wgs.provision_test"} <= packages
    assert len(TESTS) >= 40


@pytest.mark.parametrize("rego_test", TESTS, ids=lambda t: f"{t.file}::{t.name}")
def test_rego(rego_test: RegoTest) -> None:
    assert passes(_engine(), rego_test), f"{rego_test.file}: {rego_test.name} is not true"


def test_the_harness_reports_a_failing_rego_test(tmp_path: Path) -> None:
    (tmp_path / "broken_test.rego").write_text(
        "package wgs.broken_test\n\nimport rego.v1\n\nimport data.wgs.exchange\n\n"
        "test_wrongly_expects_allow_for_a_retired_partnership if {\n"
        '\td := exchange.decision with input as {"request": {"partnership": "nsoc"}}\n'
        "\td.allow\n}\n\n"
        "test_is_false if {\n\t1 == 2\n}\n")
    broken = discover(tmp_path)
    assert [t.name for t in broken] == ["test_wrongly_expects_allow_for_a_retired_partnership", "test_is_false"]
    engine = engine_with_tests([POLICIES_DIR, tmp_path], REGISTER)
    assert [passes(engine, t) for t in broken] == [False, False]
