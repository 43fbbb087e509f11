"""Recognising a holder's own references in its answer to a follow-up by match handle.

A follow-up asks the holder about its own reference of the matched record (:mod:`gateway.exchange.match_handles`)
and tells it to name related subjects — the company a person directs, the persons linked to a record — by its
own pseudonyms only (``HolderQuery.related_subjects_as_pseudonyms``), which the gateway translates into the
requester's. A holder that names one by its plain reference anyway, or repeats its reference of the matched
record, would hand the requester a reference linkable to its records. The gateway cannot tell every reference
from other content, but it knows the holder's references the follow-up was asked by, and what they look like:

* a text that contains one of them (in any letter case), or
* a text with a token **of their form**: the same letters and separators, and runs of as many letters and
  digits (with a digit) where the reference has digits — ``kvk-2026-00458`` for ``kvk-2026-00031``,
  ``subj-<24 hex>`` for another ``subj-<24 hex>``. A reference without letters or separators of its own
  (``00417``) has no form distinctive enough to look for (it would catch any number): only it itself counts.

A whole pseudonym is never taken for a reference (the requester's own, translated, stand where the holder's
were).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.enrolment.service import is_pseudonym

_RUNS = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]+")


def reference_form(ref: str) -> re.Pattern[str] | None:
    """The form of ``ref`` as a pattern that finds a token of it inside a text (case-insensitive), or None when
    ``ref`` has nothing of its own — no letters-only run, no separator — to tell its form from any token."""
    parts: list[str] = []
    distinctive = False
    for run in _RUNS.findall(ref):
        if run.isalnum() and any(c.isdigit() for c in run):
            parts.append(f"(?=[a-z]*[0-9])[a-z0-9]{{{len(run)}}}")
        else:
            parts.append(re.escape(run))
            distinctive = True
    if not distinctive:
        return None
    return re.compile(r"(?<![a-z0-9])" + "".join(parts) + r"(?![a-z0-9])", re.IGNORECASE)


class HolderReferences:
    """The holder's references a follow-up was asked by, and what of its answer names one of them or one of
    their form (see the module's docstring)."""

    def __init__(self, refs: Iterable[str]) -> None:
        self._refs = tuple(sorted({ref.casefold() for ref in refs}))
        forms = {form.pattern: form for form in map(reference_form, self._refs) if form is not None}
        self._forms = tuple(forms.values())

    def named_in(self, text: str) -> bool:
        """Whether ``text`` names a reference of the holder's (its own, or one of the form of its own)."""
        folded = text.casefold()
        named = any(ref in folded for ref in self._refs) or any(form.search(text) for form in self._forms)
        return named and not is_pseudonym(text)  # decoded only when it matters: most texts name nothing
