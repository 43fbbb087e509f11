"""Write deploy/constraints.txt: the exact versions of the gateway's runtime dependencies, for the image.

Run with the project's virtual environment, whose packages the tests passed with:

    .venv/bin/python scripts/constraints.py > deploy/constraints.txt

The versions are ``pip freeze``'s; only the packages the gateway needs at run time are kept: those named in
pyproject's ``[project] dependencies`` (with their extras, e.g. ``uvicorn[standard]``) and, recursively,
what they require on this platform. Test and development tools (the ``test`` extra: pytest, playwright,
schemathesis, hypothesis, mypy, ruff, import-linter, recordlinkage, ...) and what only they need stay out,
and so does the project itself. The Dockerfile installs with ``pip install -c deploy/constraints.txt``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# Exact versions of the gateway's runtime dependencies and everything they pull in (no test tools), used by
# the Dockerfile (`pip install -c deploy/constraints.txt`) so an image build installs what the tests ran with.
# Generated, do not edit by hand. To regenerate (after changing pyproject's dependencies or upgrading the
# virtual environment, then run the tests):
#     .venv/bin/python scripts/constraints.py > deploy/constraints.txt
"""


def runtime_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The ``[project] dependencies`` of pyproject.toml."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def runtime_closure(requirements: list[Requirement]) -> set[str]:
    """Canonical names of ``requirements`` and everything they require, as installed here (markers are
    evaluated for this interpreter and platform, extras as requested along the way)."""
    wanted: dict[str, set[str]] = {}  # name -> extras already followed
    pending = [(requirement, "") for requirement in requirements]
    while pending:
        requirement, requested_by_extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": requested_by_extra}):
            continue
        name = canonicalize_name(requirement.name)
        followed = wanted.get(name)
        new_extras = set(requirement.extras) - (followed or set())
        if followed is not None and not new_extras:
            continue
        wanted[name] = (followed or set()) | set(requirement.extras)
        extras = ["", *sorted(new_extras)] if followed is None else sorted(new_extras)
        for child in metadata.distribution(name).requires or []:
            child_requirement = Requirement(child)
            for extra in extras:
                pending.append((child_requirement, extra))
    return set(wanted)


def main() -> int:
    closure = runtime_closure(runtime_requirements())
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout.splitlines()
    pins = {}
    for line in frozen:
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line.strip())
        if match and canonicalize_name(match.group(1)) in closure:
            pins[canonicalize_name(match.group(1))] = f"{match.group(1)}=={match.group(2)}"
    missing = sorted(closure - set(pins) - {canonicalize_name("wgs-gateway")})
    if missing:
        print(f"not installed as name==version in this environment: {', '.join(missing)}", file=sys.stderr)
        return 1
    sys.stdout.write(HEADER + "".join(f"{pins[name]}\n" for name in sorted(pins)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
