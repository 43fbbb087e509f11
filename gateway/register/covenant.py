"""Private participants under a covenant (the banks of the FEC) receive police, tax and prosecution data as
hit/no-hit only, never as records (REGISTER.md: "A bank never receives police, tax or prosecution data — only
hit/no-hit").

Why a check of its own: the shipped register keeps the rule only by what it happens to contain; an
administrator editing a purpose (or adding a partnership) could let a bank's role receive what the police, the
tax office or the prosecution supply. The loader refuses such a register here, and the policy holds the same
line for any register data it is handed (``wgs.index.public_only_holder_roles``, which must list exactly
``PUBLIC_ONLY_HOLDER_ROLES``; a test compares the two).

A role counts as private when any participant holding it in the partnership is an organisation of the
`private` sector: the policy decides per role, so it treats the whole role so, and the loader names every
private participant of it.
"""

from __future__ import annotations

from collections.abc import Iterator

from gateway.register.model import Partnership, Purpose, Register

Problem = tuple[tuple[str | int, ...], str]

# The holder roles whose data a private participant receives as hit/no-hit only: REGISTER.md's police,
# tax and prosecution participants (the roles of Politie, Belastingdienst and Openbaar Ministerie).
PUBLIC_ONLY_HOLDER_ROLES: frozenset[str] = frozenset({"police", "tax", "prosecution"})


def private_participants(register: Register, partnership: Partnership) -> dict[str, list[str]]:
    """The partnership's private participants (organisations) by role."""
    found: dict[str, list[str]] = {}
    for participant in partnership.participants:
        owner = register.organisations.get(participant.organisation)
        if owner is not None and owner.sector == "private":
            found.setdefault(participant.role, []).append(participant.organisation)
    return found


def records_from_public_only_holders(purpose: Purpose, role: str) -> dict[str, list[str]]:
    """What ``role`` may receive as records for ``purpose`` from a police, tax or prosecution role: each such
    category with the roles supplying it. Records come from a role that answers the purpose with records
    (not one of its `hit_only_holders`) or that requests for it (and so may hand its categories over with a
    request); a category answered as hit/no-hit only is never records (the loader refuses it elsewhere)."""
    found: dict[str, list[str]] = {}
    receivable = purpose.receives.get(role, [])
    for holder in sorted(PUBLIC_ONLY_HOLDER_ROLES & purpose.supplies.keys()):
        if holder in purpose.hit_only_holders and holder not in purpose.requesters:
            continue
        for category in purpose.supplies[holder]:
            if category in receivable:
                found.setdefault(category, []).append(holder)
    return found


def covenant_problems(register: Register) -> Iterator[Problem]:
    """One problem per private participant and category it could receive as records from a police, tax or
    prosecution role, at the category in the role's `receives` (a hit-only category is skipped: the loader
    refuses it as records already)."""
    hit_only = {name for name, category in register.categories.items() if category.hit_only}
    for pid, partnership in register.partnerships.items():
        private = private_participants(register, partnership)
        for purpose_id, purpose in partnership.purposes.items():
            for role, organisations in private.items():
                barred = records_from_public_only_holders(purpose, role)
                for c_pos, category in enumerate(purpose.receives.get(role, [])):
                    if category not in barred or category in hit_only:
                        continue
                    for organisation in organisations:
                        yield (("partnerships", pid, "purposes", purpose_id, "receives", role, c_pos),
                               f"private participant `{organisation}` (role `{role}`) would receive `{category}` "
                               f"from `{'`, `'.join(barred[category])}` as records for `{purpose_id}`: a private "
                               "participant gets police, tax and prosecution data as hit/no-hit only (list the "
                               "holder in `hit_only_holders` or remove the category from `receives`)")
