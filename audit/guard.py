"""Defence in depth: refuse audit events that carry values shaped like personal data.

The log must hold no personal data (the data subject appears only as a pseudonym). The callers are
supposed to get that right; this guard catches the obvious mistakes before they become permanent —
an append-only log cannot be cleaned afterwards. It looks at every key and every value and refuses:

1. a BSN: nine digits (optionally grouped as ``1234.56.782`` or ``123-456-782``, with spaces, dots or dashes)
   standing alone and passing the eleven-test; also as a JSON integer;
2. an IBAN: two capitals, two check digits and 11 to 30 letters or digits (plain or in groups of four),
   standing alone and passing the ISO 13616 mod-97 check;
3. an e-mail address.

The checksums keep false positives rare (a random nine-digit number passes the eleven-test one time in
eleven); "standing alone" means not glued to other letters or digits, so hex ids and hashes never match.
Text is compared in its NFKC form with every decimal digit as its ASCII one: a BSN typed in fullwidth digits
(U+FF10 to U+FF19), another script's digits or with fullwidth separators is the same number, and an address with
a fullwidth at sign (U+FF20) the same address.
It is a guard, not a proof: names and addresses cannot be recognised this way, which is why events use
reference strings and the scenario suite scans what it wrote.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import JsonValue

from audit.errors import PersonalDataError
from audit.events import AuditEvent

# The separators a BSN is written with: space, dot, dash (ASCII and the Unicode dashes NFKC leaves alone). Grouped
# 4-2-3 (the official ``1234.56.782``) or 3-3-3 (``123-456-782``); a reference such as ``RIEC-2026-0042`` is
# neither. Fixed width, so the expression costs at most a few steps a position: linear in the text.
_SEPARATOR = "[ .\\-\u2010-\u2015\u2212]"
_BSN = re.compile(rf"(?<![0-9A-Za-z])(?:([0-9]{{4}}){_SEPARATOR}?([0-9]{{2}})|([0-9]{{3}}){_SEPARATOR}?([0-9]{{3}}))"
                  rf"{_SEPARATOR}?([0-9]{{3}})(?![0-9A-Za-z])")
# A decimal digit of any script but ASCII's (NFKC maps the fullwidth ones, not e.g. Arabic-Indic ones).
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")
_IBAN_PLAIN = re.compile(r"(?<![0-9A-Za-z])[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}(?![0-9A-Za-z])")
_IBAN_GROUPED = re.compile(r"(?<![0-9A-Za-z])[A-Z]{2}[0-9]{2}(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?(?![0-9A-Za-z])")
# Tried only where a run of local-part characters starts (the lookbehind): tried at every position, a long run
# without an "@" cost time quadratic in its length (17 ms for a 4,000-character field, the most a field holds;
# 0.06 ms now). A match starting inside a run also starts at the run's start, so the verdict is the same.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")


@dataclass(frozen=True)
class Finding:
    """Where something shaped like personal data was found, and what shape; never the value."""

    path: str
    kind: str


def passes_eleven_test(digits: str) -> bool:
    """The BSN eleven-test: 9·d1 + 8·d2 + … + 2·d8 - 1·d9 is a multiple of 11 (and not all zeros)."""
    if len(digits) != 9 or not digits.isdigit() or digits == "000000000":
        return False
    total = sum((9 - i) * int(d) for i, d in enumerate(digits[:8])) - int(digits[8])
    return total % 11 == 0


def passes_iban_check(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers (A=10), mod 97 equals 1."""
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def normalised(text: str) -> str:
    """``text`` as the guard compares it: NFKC (fullwidth letters, digits, at sign and separators as their ASCII
    forms, a no-break space as a space), then every other decimal digit as its ASCII digit. ASCII text is its own
    normal form and is returned as it is (the usual case, no copy). Linear in the text."""
    if text.isascii():
        return text
    return _OTHER_DIGIT.sub(lambda digit: str(unicodedata.decimal(digit.group())),
                            unicodedata.normalize("NFKC", text))


def _kinds_in_text(text: str) -> Iterator[str]:
    text = normalised(text)
    for match in _BSN.finditer(text):
        if passes_eleven_test("".join(group for group in match.groups() if group)):
            yield "bsn"
            break
    if any(passes_iban_check(m.group(0)) for m in _IBAN_PLAIN.finditer(text)):
        yield "iban"
    else:
        for match in _IBAN_GROUPED.finditer(text):
            groups = match.group(0).split(" ")
            # The last group(s) may belong to the surrounding text: try every prefix of whole groups.
            if any(passes_iban_check("".join(groups[:n])) for n in range(len(groups), 3, -1)):
                yield "iban"
                break
    if _EMAIL.search(text):
        yield "email"


def find_personal_data(document: JsonValue, path: str = "") -> list[Finding]:
    """Every place in a JSON document (keys and values, recursively) that looks like personal data."""
    findings: list[Finding] = []
    _walk(document, path, findings)
    return findings


def _walk(value: JsonValue, path: str, findings: list[Finding]) -> None:
    if isinstance(value, str):
        findings.extend(Finding(path, kind) for kind in _kinds_in_text(value))
    elif isinstance(value, bool) or value is None or isinstance(value, float):
        return
    elif isinstance(value, int):
        if passes_eleven_test(str(value)):
            findings.append(Finding(path, "bsn"))
    elif isinstance(value, dict):
        for key, item in value.items():
            key_kinds = list(_kinds_in_text(key))
            shown = "<key>" if key_kinds else key  # a path must never repeat what it warns about
            child = f"{path}.{shown}" if path else shown
            findings.extend(Finding(f"{child} (key)", kind) for kind in key_kinds)
            _walk(item, child, findings)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            _walk(item, f"{path}[{position}]", findings)


# A cheap first pass over an event's canonical JSON bytes that matches whenever the precise rules could
# (and more often): the same shapes, with the boundary before a BSN taken as "any byte but a letter or
# digit". Escapes (a backslash) would hide such a boundary, and are rare, so they go to the precise walk; so
# does any text that is not ASCII, which the walk compares in its normal form (fullwidth digits, say).
_SCREEN_BSN = re.compile(rb"[^0-9A-Za-z](?:[0-9]{4}[ .\-]?[0-9]{2}|[0-9]{3}[ .\-]?[0-9]{3})[ .\-]?[0-9]{3}"
                         rb"(?![0-9A-Za-z])")
_SCREEN_IBAN = re.compile(rb"[A-Z]{2}[0-9]{2}")


# _SCREEN_BSN can only match where a byte that is not a letter or digit is followed by four digits. The
# regular expression tries every position; bytes.translate (C) maps every byte to its class first, so that
# candidates can be found in the classes, and the expression is then tried only there (same answer, faster).
_BOUNDARY, _DIGIT, _ALNUM = b"#", b"0", b"a"
_CLASSES = bytes(
    _DIGIT[0] if chr(byte).isdigit() and byte < 0x80 else
    _ALNUM[0] if chr(byte).isalpha() and byte < 0x80 else _BOUNDARY[0]
    for byte in range(256))


# The same shape over the classes (an image of _SCREEN_BSN: every match of it is a match of this one at the
# same position). Its literal prefix lets the regular expression engine skip ahead in C, so a typical event
# (whose dates, versions and hex ids give a few boundary-and-four-digit spots, none of them nine digits) is
# cleared by one search; the exact expression then only confirms the separators.
_CLASS_BSN = re.compile(rb"#000(?:0#?00|#?000)#?000(?![0a])")


def _bsn_candidate(canonical: bytes) -> bool:
    classes = canonical.translate(_CLASSES)
    match = _CLASS_BSN.search(classes)
    while match is not None:
        if _SCREEN_BSN.match(canonical, match.start()):
            return True
        match = _CLASS_BSN.search(classes, match.start() + 1)
    return False


def _needs_walk(canonical: bytes) -> bool:
    if b"@" in canonical or b"\\" in canonical or not canonical.isascii():
        return True
    # islower: no ASCII capital (and some lowercase letter, which every event's keys are); a scan in C
    # without the copy that ``lower()`` makes. Only text with capitals can hold an IBAN.
    if not canonical.islower() and _SCREEN_IBAN.search(canonical):
        return True
    return _bsn_candidate(canonical)


def ensure_no_personal_data(event: AuditEvent, canonical: bytes | None = None) -> None:
    """Raise :class:`PersonalDataError` for the first field of ``event`` that looks like personal data.

    Pass the event's canonical JSON (from :func:`audit.canonical.event_canonical`) when you have it:
    most events are then cleared by one regular-expression search over that text, and only events
    with a candidate are walked field by field (which also yields the path for the error).
    """
    if canonical is not None and not _needs_walk(canonical):
        return
    findings = find_personal_data(event.to_document())
    if findings:
        raise PersonalDataError(findings[0].path, findings[0].kind)
