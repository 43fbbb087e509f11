"""The operator's reference pages keep up with the code: every command and option of ``wgs-gateway`` and
``wgs-partner`` is in docs/cli.md, every ``WGS_`` setting is in docs/configuration.md with its default and
its bounds, every link between the documents (README.md, docs/*.md) reaches a file and a heading, and the
number of kinds of caller the authorisation matrix tries is the matrix's.

Why: those tables are written by hand beside the code. An option, a setting or a range added without its row
(or a heading renamed under a link) is what an operator then looks for and does not find; nothing else fails
when that happens. The commands are read from the Typer applications themselves and the settings from the
pydantic models, so a new one is checked without editing this test."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from connectors.cli import app as partner_app
from gateway.cli import app as gateway_app
from gateway.console.settings import ConsoleSettings
from gateway.peer import UVICORN_PROXY_HEADERS
from gateway.settings import Settings
from tests.security.world import CALLERS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CODE = re.compile(r"`([^`]+)`")


def _table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row, separator rows left out (``\\|`` is a literal bar)."""
    return [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            for line in text.splitlines() if line.startswith("|") and not set(line) <= {"|", "-", " "}]


# ---- docs/cli.md ----------------------------------------------------------------------------------------

def _options(command: Any) -> list[Any]:
    return [param for param in command.params
            if param.param_type_name == "option" and not param.hidden and param.name != "help"]


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, list[Any]]]:
    """(``"db backup"``, its options) for every command a user can type; ``--help`` and the completion options
    are Typer's own. A group that runs on its own (``audit key [--history]``, beside ``audit key rotate``) is
    such a command too, with options of its own."""
    if hasattr(command, "commands"):
        if path and command.invoke_without_command:
            yield " ".join(path), _options(command)
        for name, sub in command.commands.items():
            if not sub.hidden:
                yield from _commands(sub, (*path, name))
        return
    yield " ".join(path), _options(command)


def _long_name(option: Any) -> str:
    long_name: str = next(name for name in option.opts if name.startswith("--"))
    return long_name


def _cli_section(program: str) -> str:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)
    [section] = [part for part in sections if part.startswith(f"`{program}`")]
    return section


CLI_COMMANDS = [(program, name, options) for program, app in (("wgs-gateway", gateway_app),
                                                              ("wgs-partner", partner_app))
                for name, options in _commands(typer.main.get_command(app))]


@pytest.mark.parametrize(("program", "name", "options"), CLI_COMMANDS,
                         ids=[f"{program} {name}" for program, name, _ in CLI_COMMANDS])
def test_every_command_and_option_is_in_cli_md(program: str, name: str, options: list[Any]) -> None:
    """Each option by its long name; a default the option takes of its own as ``--option DEFAULT``; an
    option read from the environment, its variable (its default is then the variable's)."""
    section = _cli_section(program)
    rows = [row for row in _table_rows(section)
            if any(span == name or span.startswith(f"{name} ") for span in CODE.findall(row[0]))]
    assert rows, f"docs/cli.md has no row for `{program} {name}`"
    text = " ".join(" ".join(row) for row in rows)
    missing = [_long_name(option) for option in options
               if not re.search(rf"{re.escape(_long_name(option))}(?![\w-])", text)]
    assert not missing, f"docs/cli.md: `{program} {name}` does not name {missing}"
    for option in options:
        if option.envvar:
            assert option.envvar in section, f"docs/cli.md: {program}'s section does not name {option.envvar}"
        elif option.default not in (None, "", []) and not isinstance(option.default, bool):
            assert f"{_long_name(option)} {option.default}" in text, \
                f"docs/cli.md: `{program} {name}` does not say {_long_name(option)}'s default, {option.default}"


# ---- docs/configuration.md --------------------------------------------------------------------------------

def _settings_fields() -> list[tuple[str, FieldInfo]]:
    groups: list[tuple[str, type[BaseModel]]] = [("WGS_", Settings), ("WGS_CONSOLE_", ConsoleSettings)]
    return [(f"{prefix}{name.upper()}", field) for prefix, model in groups
            for name, field in model.model_fields.items()]


def _configuration_rows() -> dict[str, tuple[str, str]]:
    """Variable -> (its default as the table writes it, the whole row). A row naming several variables gives
    their defaults in the same order, comma-separated."""
    rows: dict[str, tuple[str, str]] = {}
    for row in _table_rows((DOCS / "configuration.md").read_text(encoding="utf-8")):
        names = [span for span in CODE.findall(row[0]) if span.startswith("WGS_")]
        defaults = CODE.findall(row[1])
        for index, name in enumerate(names):
            default = defaults[index] if len(defaults) > index and len(defaults) <= len(names) else row[1]
            rows[name] = (default, " ".join(row))
    return rows


def _spellings(value: float, name: str) -> set[str]:
    """How the table may write a number: as is, with thousands separators, and in the field's unit."""
    number = int(value) if float(value).is_integer() else value
    out = {str(number), f"{number:,}"}
    if isinstance(number, int) and number > 0:
        units = {"_seconds": [("day", 86_400), ("hour", 3_600), ("minute", 60)],
                 "_bytes": [("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)]}
        for suffix, scale in units.items():
            if name.lower().endswith(suffix):
                for unit, size in scale:
                    if number % size == 0:
                        count = number // size
                        plural = "s" if count != 1 and unit[0].islower() else ""
                        out.add(f"{count} {unit}{plural}")
    return out


def _mentions(text: str, spellings: set[str]) -> bool:
    """A whole number: ``0`` is not found in ``10,000`` nor in ``127.0.0.1``."""
    return any(re.search(rf"(?<!\w)(?<!\d[.,]){re.escape(spelling)}(?!\w)(?![.,]\d)", text)
               for spelling in spellings)


def _default_spelling(field: FieldInfo) -> set[str] | None:
    """How the default is written in the table, or None for a default the table describes in words (unset, the
    shipped file, a path under the package)."""
    default = field.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return {str(default).lower()}
    if isinstance(default, int | float):
        return None  # numbers: _spellings, which needs the variable's name
    if isinstance(default, str):
        return {default}
    if isinstance(default, Path) and not default.is_absolute():
        return {str(default)}
    if default == {}:
        return {"{}"}
    return None


def _bounds(field: FieldInfo) -> list[float]:
    """The field's ``ge``, ``gt``, ``le`` and ``lt`` (pydantic keeps each as a metadata object of its own)."""
    return [bound for constraint in field.metadata for kind in ("ge", "gt", "le", "lt")
            if (bound := getattr(constraint, kind, None)) is not None]


SETTINGS = _settings_fields()


@pytest.mark.parametrize(("variable", "field"), SETTINGS, ids=[variable for variable, _ in SETTINGS])
def test_every_setting_is_in_configuration_md_with_its_default_and_bounds(variable: str, field: FieldInfo) -> None:
    rows = _configuration_rows()
    assert variable in rows, f"docs/configuration.md has no row for {variable}"
    written, row = rows[variable]
    default = field.get_default(call_default_factory=True)
    if isinstance(default, int | float) and not isinstance(default, bool):
        assert _mentions(written, _spellings(default, variable)), \
            f"docs/configuration.md: {variable}'s default is {default}, the table says {written!r}"
    elif (spellings := _default_spelling(field)) is not None:
        assert written in spellings, f"docs/configuration.md: {variable}'s default is {default!r}, " \
                                     f"the table says {written!r}"
    for bound in _bounds(field):
        assert _mentions(row, _spellings(bound, variable)), \
            f"docs/configuration.md: {variable} is bounded by {bound}, which its row does not say"


def test_configuration_md_names_no_setting_the_code_does_not_read() -> None:
    known = {variable for variable, _ in SETTINGS} | {UVICORN_PROXY_HEADERS}
    unknown = sorted(set(_configuration_rows()) - known)
    assert not unknown, f"docs/configuration.md documents variables nothing reads: {unknown}"


# ---- links ------------------------------------------------------------------------------------------------

def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^ {0,3}```.*?^ {0,3}```", "", text, flags=re.M | re.S)


def _anchors(path: Path) -> set[str]:
    """The ids GitHub gives the headings (lower case, punctuation other than ``-`` and ``_`` dropped, spaces
    to ``-``, a repeated one suffixed ``-1``, ``-2``, ...)."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", _without_code_blocks(path.read_text(encoding="utf-8")),
                              flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        repeat = 0
        while (anchor := slug if repeat == 0 else f"{slug}-{repeat}") in anchors:
            repeat += 1
        anchors.add(anchor)
    return anchors


LINKS = [(path, target) for path in _markdown_files()
         for target in re.findall(r"\]\(([^)\s]+)\)", _without_code_blocks(path.read_text(encoding="utf-8")))
         if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize(("source", "target"), LINKS,
                         ids=[f"{source.relative_to(ROOT)}->{target}" for source, target in LINKS])
def test_every_link_between_the_documents_resolves(source: Path, target: str) -> None:
    file, _, anchor = target.partition("#")
    destination = (source.parent / file).resolve() if file else source
    assert destination.exists(), f"{source.relative_to(ROOT)}: {target} names no file"
    if anchor and destination.suffix == ".md":
        assert anchor in _anchors(destination), f"{source.relative_to(ROOT)}: {target} names no heading"


# ---- numbers taken from the code --------------------------------------------------------------------------

def test_the_kinds_of_caller_of_the_authorisation_matrix_are_counted_as_the_matrix_has_them() -> None:
    """Why: a caller added to the matrix (the copy of a certificate-bound token, presented without its
    certificate) left docs/security.md and docs/testing.md saying 13; nothing else noticed."""
    stated = {(path.name, int(count)) for path in _markdown_files()
              for count in re.findall(r"(\d+) (?:kinds of )?callers?\b", path.read_text(encoding="utf-8"))}
    assert stated, "docs/security.md no longer says how many kinds of caller the matrix tries"
    wrong = sorted(stated - {(name, len(CALLERS)) for name, _ in stated})
    assert not wrong, f"the authorisation matrix tries {len(CALLERS)} kinds of caller; the documents say {wrong}"


def test_architecture_md_lists_every_import_contract() -> None:
    """docs/architecture.md's table of one-way imports names each contract import-linter checks (by the name
    in pyproject.toml, up to its colon), and no other: a contract added, renamed or dropped there changes what
    the page promises."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"][
        "contracts"]
    heading = "## Packages and their one-way imports"
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    assert heading in text, f"docs/architecture.md has no section {heading!r}"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    listed = {row[0] for row in _table_rows(section)[1:]}
    assert listed == {contract["name"].split(":")[0] for contract in contracts}
