"""Load a register YAML file into a ``Register``, refusing a bad file with the line and the reason.

Why the extra work over ``yaml.safe_load``: an operator editing the register must be told *where* the
problem is. We compose the YAML node tree once, remember the start line of every path, and map pydantic's
error locations (and our cross-reference problems) back to those lines. Duplicate keys, which PyYAML would
silently resolve to the last value, are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.errors import InvalidRegister
from gateway.register.model import Register
from gateway.register.validation import check_references

Loc = tuple[str | int, ...]
MAX_REPORTED = 20


@dataclass(frozen=True)
class RegisterProblem:
    line: int
    column: int
    loc: Loc
    message: str

    def render(self, source: str) -> str:
        where = ".".join(str(part) for part in self.loc) or "(document)"
        return f"{source}:{self.line}:{self.column}: {where}: {self.message}"


def _index_nodes(node: yaml.Node, path: Loc, lines: dict[Loc, tuple[int, int]],
                 duplicates: list[RegisterProblem], enclosing: frozenset[int] = frozenset()) -> None:
    """Index every path's line, noting duplicate keys and aliases that contain themselves.

    ``enclosing`` holds the nodes this one lies within: an alias to one of them (``a: &a [*a]``) is a
    document without end, which PyYAML composes without complaint; walked into, it ended the loader (and
    ``register check``, and the start) in a RecursionError traceback instead of the file's line."""
    lines[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if id(node) in enclosing:
        duplicates.append(RegisterProblem(node.start_mark.line + 1, node.start_mark.column + 1, path,
                                          "an alias to a node that contains it (a recursive anchor)"))
        return
    enclosing = enclosing | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                duplicates.append(RegisterProblem(key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                                  (*path, key), f"duplicate key `{key}`"))
            seen.add(key)
            lines[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _index_nodes(value_node, (*path, key), lines, duplicates, enclosing)
            lines[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            _index_nodes(item, (*path, position), lines, duplicates, enclosing)


def _line_of(loc: Loc, lines: dict[Loc, tuple[int, int]]) -> tuple[int, int]:
    """The line of the deepest known prefix of ``loc`` (a missing field points at its parent)."""
    for cut in range(len(loc), -1, -1):
        found = lines.get(tuple(loc[:cut]))
        if found:
            return found
    return (1, 1)


def _compose_and_construct(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for the lines) and the document built from it: what ``yaml.compose`` and
    ``yaml.safe_load`` give, from one parse of the text instead of two (the parse is most of a start-up's
    register load, and the gateway loads the register at every start)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return root, None if root is None else loader.construct_document(root)
    finally:
        loader.dispose()


def _position(text: str, offset: int) -> tuple[int, int]:
    """Line and column (from 1) of a character offset into ``text``."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def parse_register(text: str, source: str = "<register>") -> Register:
    """Parse and validate register text; raise ``InvalidRegister`` listing every problem with its line."""
    try:
        root, document = _compose_and_construct(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise InvalidRegister(f"{source}:{line}:{column}: YAML syntax error: {exc.problem}",
                              extra={"problems": [{"line": line, "column": column, "reason": str(exc.problem)}]}
                              ) from None
    except yaml.YAMLError as exc:  # unmarked: a ReaderError (a control character PyYAML does not accept)
        line, column = _position(text, getattr(exc, "position", 0))
        character = getattr(exc, "character", None)
        reason = f"unacceptable character #x{character:04x}" if isinstance(character, int) else type(exc).__name__
        raise InvalidRegister(f"{source}:{line}:{column}: YAML syntax error: {reason}",
                              extra={"problems": [{"line": line, "column": column, "reason": reason}]}) from None
    if root is None or not isinstance(document, dict):
        raise InvalidRegister(f"{source}:1:1: the register must be a YAML mapping")
    lines: dict[Loc, tuple[int, int]] = {}
    problems: list[RegisterProblem] = []
    _index_nodes(root, (), lines, problems)
    if not problems:
        try:
            register = Register.model_validate(document)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                line, column = _line_of(loc, lines)
                problems.append(RegisterProblem(line, column, loc, str(error["msg"])))
        else:
            for loc, message in check_references(register):
                line, column = _line_of(loc, lines)
                problems.append(RegisterProblem(line, column, loc, message))
            if not problems:
                return register
    problems.sort(key=lambda p: (p.line, p.column))
    shown = problems[:MAX_REPORTED]
    rendered = [p.render(source) for p in shown]
    more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
    raise InvalidRegister(
        f"register refused: {rendered[0]}{more}" if len(rendered) == 1 else
        f"register refused, {len(problems)} problems{more}: " + "; ".join(rendered),
        extra={"problems": [{"line": p.line, "column": p.column, "path": ".".join(map(str, p.loc)),
                             "reason": p.message} for p in shown]},
    )


def load_register(path: Path, *, audience: str | None = None) -> tuple[Register, str]:
    """Read and validate a register file; returns the register and its source text. With ``audience`` (the
    gateway's token audience, ``WGS_AUDIENCE``), a register naming a partner system by it is refused too.

    Why the audience: the gateway's tokens for a holder carry the holder's system id as their audience, and the
    access tokens it issues to partner systems carry ``audience``; both are signed with the same keys. A holder
    system named like the audience would take any partner's access token for a call from the gateway."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRegister(f"{path}: cannot read the register file ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # a file saved as Latin-1 or Windows-1252: its line, not a traceback
        line = data[:exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidRegister(f"{path}:{line}:{column}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the "
                              "register file as UTF-8",
                              extra={"problems": [{"line": line, "column": column,
                                                   "reason": f"not UTF-8 (byte 0x{data[exc.start]:02x})"}]}
                              ) from None
    register = parse_register(text, str(path))
    if audience is not None and audience in register.all_systems():
        raise InvalidRegister(f"{path}: partner system `{audience}` has the gateway's token audience "
                              "(WGS_AUDIENCE) as its id: a holder of that name would take every partner's access "
                              "token for the gateway's; rename the system or set another WGS_AUDIENCE")
    return register, text
