"""Who may see and work which escalation case — from the register, never from the case's own claims.

* Tier 1 is worked by the privacy officers of the two organisations (the requester's officer may comment,
  refer up or withdraw, but four eyes forbid it to decide its own request). Their administrators see the
  case as a party and comment, but take no part in the tier-1 decision: the register names its privacy
  officers (``parties-privacy-officers``), not the organisation.
* Tiers 2 and 3 are worked by the organisations the register names for that tier of the partnership; they
  see the partnership's cases from their tier up.
* The partnership's coordinating privacy officer sees all of its cases.
* Partner systems see the cases of their own organisation's requests (to learn decisions and re-run), in the
  partnerships the register lists them in for that organisation (where the policy lets them request).
"""

from __future__ import annotations

from escalation.cases import Case
from escalation.queries import CaseScope
from gateway.auth.principal import Principal, Role, Scope
from gateway.register.model import Partnership, Register

PRIVACY_OFFICER_ROLES = frozenset({Role.PRIVACY_OFFICER.value, Role.COORDINATING_PRIVACY_OFFICER.value})
WORKING_ROLES = PRIVACY_OFFICER_ROLES | {Role.ADMINISTRATOR.value}


def is_worker(principal: Principal) -> bool:
    """A person who works cases: escalation scope and a role that carries it."""
    return (principal.kind == "person" and principal.has_scope(Scope.ESCALATION.value)
            and bool(principal.roles & WORKING_ROLES))


def tier_deciders(partnership: Partnership, tier: int, case: Case | None = None) -> set[str]:
    """Organisations whose people decide at ``tier``; tier 1's "parties" are the case's two organisations."""
    spec = next(t for t in partnership.escalation.tiers if t.tier == tier)
    if spec.deciders == "parties-privacy-officers":
        return {case.requester_org, case.holder_org} if case else set()
    return set(spec.deciders)


def min_deciders(partnership: Partnership, tier: int) -> int:
    return next(t.min_deciders for t in partnership.escalation.tiers if t.tier == tier)


def case_scope(principal: Principal, register: Register) -> CaseScope:
    """The cases ``principal`` may see (persons need the escalation scope, systems the exchange scope)."""
    if principal.kind == "system":
        if not principal.has_scope(Scope.EXCHANGE.value):
            return CaseScope()
        return CaseScope(parties=frozenset({principal.organisation}),
                         within=system_partnerships(principal, register))
    if not is_worker(principal):
        return CaseScope()
    from_tier: dict[str, int] = {}
    for pid, partnership in register.partnerships.items():
        if partnership.coordinating_privacy_officer == principal.organisation:
            from_tier[pid] = 1
            continue
        tiers = [t.tier for t in partnership.escalation.tiers
                 if isinstance(t.deciders, list) and principal.organisation in t.deciders]
        if tiers:
            from_tier[pid] = min(tiers)
    return CaseScope(parties=frozenset({principal.organisation}), partnership_from_tier=from_tier)


def system_partnerships(principal: Principal, register: Register) -> frozenset[str]:
    """The partnerships in which the partner system ``principal`` acts for its organisation: those whose
    register lists it among that organisation's systems — as the policy does for its requests (rule 1)."""
    return frozenset(pid for pid, partnership in register.partnerships.items()
                     if any(p.organisation == principal.organisation and principal.subject in p.systems
                            for p in partnership.participants))


def has_tier_role(principal: Principal, partnership: Partnership, tier: int) -> bool:
    """Whether ``principal``'s roles are those that decide at ``tier``: a tier the register gives to the
    parties' privacy officers needs a privacy officer; a tier it gives to organisations, any person of
    theirs who works cases (the legal desk's administrators)."""
    spec = next(t for t in partnership.escalation.tiers if t.tier == tier)
    return spec.deciders != "parties-privacy-officers" or bool(principal.roles & PRIVACY_OFFICER_ROLES)


def may_decide(principal: Principal, case: Case, register: Register) -> bool:
    """Take part in the decision at the case's current tier (vote, refer up, start the review)."""
    partnership = register.partnerships.get(case.partnership)
    return (is_worker(principal) and partnership is not None
            and principal.organisation in tier_deciders(partnership, case.tier, case)
            and has_tier_role(principal, partnership, case.tier))


def may_object_as_holder(principal: Principal) -> bool:
    """A holder's objection to a disclosure is made by "a holder's privacy officer" (docs/escalations.md): a
    person with a privacy-officer role (coordinating included, being one of the participants' officers). Its
    administrators work the case once it is open (see it, comment, withdraw it) but do not open one, and its
    partner systems neither: the objection contests what the holder's own officer is answerable for."""
    return is_worker(principal) and bool(principal.roles & PRIVACY_OFFICER_ROLES)


def may_withdraw(principal: Principal, case: Case) -> bool:
    """The organisation that opened the case may drop it (for the gateway's own cases: the requester).

    A holder's objection is made by the holder's privacy officer — its partner systems are refused opening
    one — so only the holder's people who work cases withdraw it: a system may not drop what it could not
    have made. The requester's system may withdraw the cases of its own requests (to re-run instead)."""
    owners = {case.opened_by_org} if case.opened_by_org else {case.requester_org}  # a holder's objection is
    # the holder's to withdraw, not the requester's whose disclosure it contests
    if principal.organisation not in owners:
        return False
    return is_worker(principal) or (principal.kind == "system" and case.trigger != "holder-objection")


def may_manage_gaps(principal: Principal, partnership_id: str, register: Register) -> bool:
    """Put gaps on the agenda and resolve them: the coordinating officer and the tier-2/3 organisations."""
    partnership = register.partnerships.get(partnership_id)
    if partnership is None or not is_worker(principal):
        return False
    if partnership.coordinating_privacy_officer == principal.organisation:
        return True
    return any(isinstance(t.deciders, list) and principal.organisation in t.deciders
               for t in partnership.escalation.tiers)


def gap_partnerships(principal: Principal, register: Register) -> set[str]:
    """Partnerships whose legal gaps ``principal`` may read: where its organisation takes part or decides."""
    if not is_worker(principal):
        return set()
    seen = set()
    for pid, partnership in register.partnerships.items():
        members = {p.organisation for p in partnership.participants} | {partnership.coordinating_privacy_officer}
        deciders = {o for t in partnership.escalation.tiers if isinstance(t.deciders, list) for o in t.deciders}
        if principal.organisation in members | deciders:
            seen.add(pid)
    return seen
