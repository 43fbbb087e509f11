"""Which simulated partner systems exist, whom they act for, what they hold and how each behaves as a holder.

One generic simulator serves every partner; a profile is all that differs. System ids and organisation ids
are those of the shipped register (``gateway/data/register.yaml``); a unit test checks that every category
the register lets a partner's role supply is one its profile holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors import categories as c


@dataclass(frozen=True)
class PartnerProfile:
    """One simulated holder system."""

    system: str
    organisation: str
    title: str
    default_port: int
    holds: frozenset[str]
    refusal_reason: str | None = None  # why it refuses for subjects it marks confidential (None: never refuses)


PROFILES: dict[str, PartnerProfile] = {p.system: p for p in [
    PartnerProfile("politie-bvh", "politie", "Politie — Basisvoorziening Handhaving", 9101,
                   frozenset({c.POLICE_INCIDENTS, c.CRIMINAL_INTELLIGENCE, c.ONGOING_INVESTIGATION}),
                   refusal_reason="investigation-confidentiality"),
    PartnerProfile("belastingdienst-ivs", "belastingdienst", "Belastingdienst — informatievoorziening", 9102,
                   frozenset({c.TAX_DEBTS, c.TAX_COMPLIANCE, c.INCOME, c.ASSETS})),
    PartnerProfile("kvk-handelsregister", "kvk", "Kamer van Koophandel — Handelsregister", 9103,
                   frozenset({c.IDENTITY, c.ADDRESS, c.COMPANY_REGISTRATION, c.DIRECTORSHIPS})),
    PartnerProfile("gemeente-amsterdam-vth", "gemeente-amsterdam", "Gemeente Amsterdam — VTH en Bibob", 9104,
                   frozenset({c.IDENTITY, c.ADDRESS, c.PERMITS, c.BIBOB_FILES, c.SCHOOL_ABSENCE,
                              c.CARE_INVOLVEMENT})),
    PartnerProfile("fiod-ois", "fiod", "FIOD — onderzoeksinformatie", 9105,
                   frozenset({c.ONGOING_INVESTIGATION})),
    PartnerProfile("abn-amro-fec", "abn-amro", "ABN AMRO — FEC-koppeling", 9106,
                   frozenset({c.BANK_ACCOUNTS, c.FLAGGED_TRANSACTIONS})),
    PartnerProfile("om-compas", "om-amsterdam", "Openbaar Ministerie — COMPAS", 9107,
                   frozenset({c.CONVICTIONS, c.ONGOING_INVESTIGATION})),
]}
