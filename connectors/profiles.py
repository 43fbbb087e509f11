"""Which simulated partner systems exist, whom they act for, and how each behaves as a holder."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PartnerProfile:
    system: str
    organisation: str
    title: str
    default_port: int
    refusal_reason: str | None = None  # why it refuses for subjects marked confidential


PROFILES: dict[str, PartnerProfile] = {p.system: p for p in [
    PartnerProfile("politie-bvh", "politie", "Politie — Basisvoorziening Handhaving", 9101,
                   refusal_reason="investigation-confidentiality"),
    PartnerProfile("belastingdienst-ivs", "belastingdienst", "Belastingdienst — informatievoorziening", 9102),
    PartnerProfile("kvk-handelsregister", "kvk", "Kamer van Koophandel — Handelsregister", 9103),
    PartnerProfile("gemeente-amsterdam-vth", "gemeente-amsterdam", "Gemeente Amsterdam — VTH en Bibob", 9104),
    PartnerProfile("fiod-ois", "fiod", "FIOD — onderzoeksinformatie", 9105),
    PartnerProfile("abn-amro-fec", "abn-amro", "ABN AMRO — FEC-koppeling", 9106),
    PartnerProfile("om-compas", "om-amsterdam", "Openbaar Ministerie — COMPAS", 9107),
]}
