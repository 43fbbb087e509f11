"""A decision cites its rules by ``policy_version`` only: a rule change without a version bump would give two
sets of rules one name in the audit log. policies/version.rego records, next to the version, the digest of the
policy files it names; a change to them fails here until the version is bumped and the digest updated."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from gateway.policy.engine import policy_files
from gateway.settings import POLICIES_DIR

VERSION_FILE = "version.rego"
_RECORDED = re.compile(r'^policies_sha256 := "([0-9a-f]{64})"$', re.MULTILINE)


def policies_sha256(directory: Path) -> str:
    """SHA-256 over the name and bytes of every policy file but version.rego (which holds the digest)."""
    digest = hashlib.sha256()
    for path in policy_files(directory):
        if path.name != VERSION_FILE:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def unrecorded_change(directory: Path) -> str | None:
    """Why the policies in ``directory`` do not match the digest recorded next to their version, or None."""
    found = _RECORDED.search((directory / VERSION_FILE).read_text(encoding="utf-8"))
    if found is None:
        return f"policies/{VERSION_FILE} records no `policies_sha256 := \"<64 hex digits>\"`"
    actual = policies_sha256(directory)
    if found.group(1) == actual:
        return None
    return (f"the policy files changed since policy_version was last bumped: bump `policy_version` in "
            f"policies/{VERSION_FILE} and set `policies_sha256` there to \"{actual}\"")


def test_the_policies_are_the_ones_their_version_names() -> None:
    assert unrecorded_change(POLICIES_DIR) is None, unrecorded_change(POLICIES_DIR)


@pytest.mark.parametrize("change", ["a-rule", "a-new-module", "a-removed-module"])
def test_a_policy_change_without_a_new_digest_is_caught(tmp_path: Path, change: str) -> None:
    for source in policy_files(POLICIES_DIR):
        shutil.copy(source, tmp_path / source.name)
    assert unrecorded_change(tmp_path) is None
    if change == "a-rule":
        exchange = tmp_path / "exchange.rego"
        exchange.write_text(exchange.read_text(encoding="utf-8").replace('"denied"', '"allowed"', 1), encoding="utf-8")
    elif change == "a-new-module":
        (tmp_path / "extra.rego").write_text("package wgs.extra\n\nimport rego.v1\n\nx := 1\n", encoding="utf-8")
    else:
        (tmp_path / "discovery.rego").unlink()
    message = unrecorded_change(tmp_path)
    assert message is not None
    assert "bump `policy_version`" in message
    assert policies_sha256(tmp_path) in message


def test_a_version_file_without_a_digest_is_caught(tmp_path: Path) -> None:
    (tmp_path / VERSION_FILE).write_text('package wgs.version\n\npolicy_version := "x"\n', encoding="utf-8")
    assert "records no `policies_sha256" in (unrecorded_change(tmp_path) or "")
