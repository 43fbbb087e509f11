"""Cross-reference checks the schema alone cannot express.

Each problem carries the path (``loc``) of the offending value so the loader can report its line.
These are the rules that keep the register a consistent legal ground truth: a role that is nobody's, a
category that does not exist, a never-shared category (or one its partnership never discloses) configured
as shareable, a hit-only category supplied by a role that would answer with records, a private participant that
would receive police, tax or prosecution records (``gateway.register.covenant``), a partnership retired
before it was established, or an id listed twice in one list is refused at load time rather than discovered
in a policy decision.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from gateway.client.models import CATEGORY_PATTERN, LEGAL_BASIS_MAX_LENGTH, SLUG_PATTERN
from gateway.register.covenant import covenant_problems
from gateway.register.model import Register, Status

Problem = tuple[tuple[str | int, ...], str]


def check_references(register: Register) -> list[Problem]:
    return list(_problems(register))


def _problems(register: Register) -> Iterator[Problem]:
    yield from _unreachable_ids(register)
    yield from _listed_twice(register)
    yield from covenant_problems(register)
    owner_of_system: dict[str, str] = {}
    for org_id, org in register.organisations.items():
        for position, system in enumerate(org.systems):
            if system in owner_of_system:
                yield (("organisations", org_id, "systems", position),
                       f"system `{system}` already acts for `{owner_of_system[system]}`")
            owner_of_system[system] = org_id
    never_shared = {name for name, category in register.categories.items() if category.never_shared}
    hit_only = {name for name, category in register.categories.items() if category.hit_only}

    for pid, partnership in register.partnerships.items():
        base: tuple[str | int, ...] = ("partnerships", pid)
        if partnership.status is Status.RETIRED and partnership.retired is None:
            yield ((*base, "status"), "a retired partnership needs a `retired` date")
        if partnership.status is Status.ACTIVE and partnership.retired is not None:
            yield ((*base, "retired"), "an active partnership cannot have a `retired` date")
        if partnership.retired is not None and partnership.retired < partnership.established:
            yield ((*base, "retired"), f"retired before it was established ({partnership.retired} < "
                                       f"{partnership.established})")
        roles = set()
        participant_orgs = set()
        for position, participant in enumerate(partnership.participants):
            loc = (*base, "participants", position)
            roles.add(participant.role)
            if participant.organisation in participant_orgs:  # who it is would depend on which entry is read
                yield ((*loc, "organisation"), f"`{participant.organisation}` is a participant already")
            participant_orgs.add(participant.organisation)
            owner = register.organisations.get(participant.organisation)
            if owner is None:
                yield ((*loc, "organisation"), f"unknown organisation `{participant.organisation}`")
                continue
            for s_pos, system in enumerate(participant.systems):
                if system not in owner.systems:
                    yield ((*loc, "systems", s_pos),
                           f"system `{system}` does not act for `{participant.organisation}`")
        if partnership.coordinating_privacy_officer not in participant_orgs:
            yield ((*base, "coordinating_privacy_officer"),
                   f"`{partnership.coordinating_privacy_officer}` is not a participant")
        for c_pos, category in enumerate(partnership.never_disclosed):
            if category not in register.categories:
                yield ((*base, "never_disclosed", c_pos), f"unknown category `{category}`")
        never_here = set(partnership.never_disclosed)
        for t_pos, tier in enumerate(partnership.escalation.tiers):
            if tier.tier != t_pos + 1:
                yield ((*base, "escalation", "tiers", t_pos, "tier"), f"tier {t_pos + 1} expected here")
            if isinstance(tier.deciders, list):
                for d_pos, decider in enumerate(tier.deciders):
                    if decider not in register.organisations:
                        yield ((*base, "escalation", "tiers", t_pos, "deciders", d_pos),
                               f"unknown organisation `{decider}`")
        for purpose_id, purpose in partnership.purposes.items():
            ploc = (*base, "purposes", purpose_id)
            yield from _legal_basis_problems((*ploc, "legal_basis"), purpose.legal_basis)
            for r_pos, role in enumerate(purpose.requesters):
                if role not in roles:
                    yield ((*ploc, "requesters", r_pos), f"no participant has role `{role}`")
                elif role not in purpose.receives:
                    yield ((*ploc, "requesters", r_pos), f"requester role `{role}` has no `receives` entry")
            for field_name in ("supplies", "receives"):
                mapping: dict[str, list[str]] = getattr(purpose, field_name)
                for role, categories in mapping.items():
                    if role not in roles:
                        yield ((*ploc, field_name, role), f"no participant has role `{role}`")
                    for c_pos, category in enumerate(categories):
                        if category not in register.categories:
                            yield ((*ploc, field_name, role, c_pos), f"unknown category `{category}`")
                        elif category in never_shared:
                            yield ((*ploc, field_name, role, c_pos),
                                   f"category `{category}` is never shared and cannot be configured here")
                        elif category in never_here:
                            yield ((*ploc, field_name, role, c_pos),
                                   f"the partnership never discloses `{category}` (`never_disclosed`): it "
                                   "cannot be configured here")
            for h_pos, role in enumerate(purpose.hit_only_holders):
                if role not in purpose.supplies:
                    yield ((*ploc, "hit_only_holders", h_pos), f"`{role}` supplies nothing for this purpose")
            for role, categories in purpose.supplies.items():
                if role in purpose.hit_only_holders:
                    continue
                for c_pos, category in enumerate(categories):
                    if category in hit_only:
                        yield ((*ploc, "supplies", role, c_pos),
                               f"category `{category}` is answered as hit/no-hit only: list `{role}` in "
                               "`hit_only_holders` or do not supply it here")


def _legal_basis_problems(loc: tuple[str | int, ...], legal_basis: str) -> Iterator[Problem]:
    """A legal basis no request can state: the policy denies every request whose ``legal_basis`` is not exactly
    the purpose's (``legal-basis-mismatch``), and a request's is at most LEGAL_BASIS_MAX_LENGTH characters.
    Blank, it is a purpose without a legal basis, which the WGS does not allow; with whitespace around it (a
    YAML folded block ``>`` ends it in a newline) or longer than a request's, every request for the purpose
    is denied, for a reason its requester cannot see in the register's text."""
    if not legal_basis.strip():
        yield loc, "the legal basis is blank: every purpose needs one"
    elif legal_basis != legal_basis.strip():
        yield loc, ("the legal basis begins or ends with whitespace (a line break?): requests must state it "
                    "exactly, so write it without")
    if len(legal_basis) > LEGAL_BASIS_MAX_LENGTH:
        yield loc, (f"the legal basis is {len(legal_basis)} characters long: a request states at most "
                    f"{LEGAL_BASIS_MAX_LENGTH}")


def _unreachable_ids(register: Register) -> Iterator[Problem]:
    """Ids the API could never name: every request carries partnerships, purposes and organisations as
    slugs and categories in their own pattern, and a partner system signs in with its id as a slug (its
    OAuth client id), so any other id would be a part of the register no request can reach (or a case or
    whitespace variant of an id, standing beside it for nothing)."""
    kinds: list[tuple[tuple[str | int, ...], list[str], str]] = [
        (("categories",), list(register.categories), CATEGORY_PATTERN),
        (("organisations",), list(register.organisations), SLUG_PATTERN),
        (("partnerships",), list(register.partnerships), SLUG_PATTERN),
    ]
    kinds += [(("partnerships", pid, "purposes"), list(p.purposes), SLUG_PATTERN)
              for pid, p in register.partnerships.items()]
    for org_id, org in register.organisations.items():
        for position, system in enumerate(org.systems):
            if not re.fullmatch(SLUG_PATTERN, system):
                yield (("organisations", org_id, "systems", position),
                       f"`{system}` is no valid id (expected the pattern {SLUG_PATTERN})")
    for base, ids, pattern in kinds:
        for identifier in ids:
            if not re.fullmatch(pattern, identifier):
                yield ((*base, identifier), f"`{identifier}` is no valid id (expected the pattern {pattern})")


def _listed_twice(register: Register) -> Iterator[Problem]:
    """Ids a list names more than once (refused as a mapping's duplicate keys are; an organisation's systems
    are checked with every system's owner, above): harmless to the policy, which reads the lists as sets, but
    a slip in editing (one of the two was meant to be another id) in the legal ground truth every decision
    cites."""
    lists: list[tuple[tuple[str | int, ...], Iterable[object]]] = [
        (("office_hours", "weekdays"), register.office_hours.weekdays)]
    for pid, partnership in register.partnerships.items():
        base: tuple[str | int, ...] = ("partnerships", pid)
        lists.append(((*base, "never_disclosed"), partnership.never_disclosed))
        lists += [((*base, "participants", n, "systems"), p.systems) for n, p in enumerate(partnership.participants)]
        lists += [((*base, "escalation", "tiers", n, "deciders"), t.deciders)
                  for n, t in enumerate(partnership.escalation.tiers) if isinstance(t.deciders, list)]
        for purpose_id, purpose in partnership.purposes.items():
            ploc = (*base, "purposes", purpose_id)
            lists += [((*ploc, "requesters"), purpose.requesters),
                      ((*ploc, "hit_only_holders"), purpose.hit_only_holders)]
            lists += [((*ploc, "supplies", role), categories) for role, categories in purpose.supplies.items()]
            lists += [((*ploc, "receives", role), categories) for role, categories in purpose.receives.items()]
    for loc, items in lists:
        seen: set[object] = set()
        for position, item in enumerate(items):
            if item in seen:
                yield ((*loc, position), f"`{item}` is listed twice")
            seen.add(item)
