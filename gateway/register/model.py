"""The partnership register as typed data (WGS: partnerships, purposes, participants, categories).

Why a model and not dicts: the register is the legal ground truth every decision cites, so the gateway
refuses a file that does not match this schema exactly (``extra="forbid"``). Cross-references (a role
that is not a participant, an unknown category, ...) are checked in ``gateway.register.validation``.
The same document, as JSON, is the OPA data the Rego policies evaluate.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.client.models import SLUG_PATTERN

Slug = str  # lower-case identifiers such as "riec-amsterdam-amstelland", "bibob-integrity-check"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Status(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


class Category(_Strict):
    description: str = Field(min_length=1)
    never_shared: bool = Field(default=False, description="Never disclosed through the gateway (e.g. CIE).")
    hit_only: bool = Field(default=False, description="Only answered as hit/no-hit, never as records.")


class Organisation(_Strict):
    name: str = Field(min_length=1)
    sector: Literal["public", "private"]
    systems: list[str] = Field(default_factory=list, description="Partner systems that act for it.")


class Participant(_Strict):
    organisation: str = Field(pattern=SLUG_PATTERN)
    role: str = Field(pattern=SLUG_PATTERN)
    systems: list[str] = Field(default_factory=list)
    status: Status = Status.ACTIVE


class Retention(_Strict):
    months: int = Field(ge=1, le=240)
    counted_from: Literal["disclosure", "case-closure"]


class Purpose(_Strict):
    description: str = Field(min_length=1)
    legal_basis: str = Field(min_length=1)
    requesters: list[str] = Field(min_length=1, description="Roles that may request for this purpose.")
    supplies: dict[str, list[str]] = Field(description="Holder role -> categories it supplies.")
    receives: dict[str, list[str]] = Field(description="Role -> categories it may receive.")
    hit_only_holders: list[str] = Field(default_factory=list, description="Holder roles answering hit/no-hit.")
    minors_allowed: bool = False
    urgent: bool = Field(default=False, description="Exempt from the office-hours escalation (rule 7).")
    results_only: bool = Field(default=False, description="Only results may leave the partnership.")
    retention: Retention
    bulk_threshold: int = Field(default=25, ge=1, description="More subjects in one request escalates.")
    daily_limit_per_system: int = Field(default=200, ge=1, description="More requests per day escalates.")


class EscalationTier(_Strict):
    tier: int = Field(ge=1, le=3)
    name: str
    deadline_working_days: int = Field(ge=1, le=120)
    deciders: Literal["parties-privacy-officers"] | list[str]
    min_deciders: int = Field(default=1, ge=1, le=5)


class Escalation(_Strict):
    tiers: list[EscalationTier] = Field(min_length=3, max_length=3)


class Partnership(_Strict):
    name: str = Field(min_length=1)
    status: Status
    established: date
    retired: date | None = None
    goal: str = Field(min_length=1)
    coordinating_privacy_officer: str
    participants: list[Participant] = Field(min_length=2)
    escalation: Escalation
    never_disclosed: list[str] = Field(default_factory=list)
    purposes: dict[str, Purpose] = Field(min_length=1)

    def participants_with_role(self, role: str) -> list[Participant]:
        return [p for p in self.participants if p.role == role]

    def participant_of_system(self, system: str) -> Participant | None:
        return next((p for p in self.participants if system in p.systems), None)

    def participant_of_organisation(self, organisation: str) -> Participant | None:
        return next((p for p in self.participants if p.organisation == organisation), None)


_CLOCK_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_CLOCK_TIME_OR_MIDNIGHT = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"  # "24:00": to the end of the day


class OfficeHours(_Strict):
    """Rule 7's office hours. Checked here, at load time: a time zone the machine does not know, or hours
    that cannot be, would otherwise pass the loader and fail every later decision that reads them."""

    timezone: str = "Europe/Amsterdam"
    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = Field(default_factory=lambda: [1, 2, 3, 4, 5],
                                                              min_length=1)
    start: str = Field(default="07:00", pattern=_CLOCK_TIME)
    end: str = Field(default="19:00", pattern=_CLOCK_TIME_OR_MIDNIGHT)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone `{value}` (an IANA name such as Europe/Amsterdam)") from exc
        return value

    @model_validator(mode="after")
    def _start_before_end(self) -> OfficeHours:
        if self.start >= self.end:  # zero-padded HH:MM compares as text
            raise ValueError(f"office hours must start before they end ({self.start}-{self.end})")
        return self


class Register(_Strict):
    format: Literal["wgs-register/1"]
    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    published: date
    office_hours: OfficeHours = Field(default_factory=OfficeHours)
    categories: dict[str, Category] = Field(min_length=1)
    organisations: dict[str, Organisation] = Field(min_length=1)
    partnerships: dict[str, Partnership] = Field(min_length=1)

    def organisation_of_system(self, system: str) -> str | None:
        """The organisation a partner system acts for, or None for an unknown system."""
        return next((org_id for org_id, org in self.organisations.items() if system in org.systems), None)

    def partnerships_of_system(self, system: str) -> list[str]:
        """The active partnerships in which the system's organisation is an active participant (where it
        enrols its subjects)."""
        organisation = self.organisation_of_system(system)
        return [pid for pid, p in self.partnerships.items() if p.status == "active"
                and any(x.organisation == organisation and x.status == "active" for x in p.participants)]

    def all_systems(self) -> set[str]:
        return {system for org in self.organisations.values() for system in org.systems}

    def never_disclosed(self, partnership_id: str) -> set[str]:
        """Categories no exchange of the partnership discloses, whatever else says so (rule 4): those never
        shared anywhere and those the partnership excludes. The policy's ``wgs.index.never_disclosed``
        computes the same from the same register; this is for checks made before the policy is asked (an
        escalation decision may not permit one: no re-run could carry it out)."""
        partnership = self.partnerships.get(partnership_id)
        return ({name for name, category in self.categories.items() if category.never_shared}
                | set(partnership.never_disclosed if partnership else []))

    def disclosable(self, partnership_id: str, purpose_id: str, requester: str, holder: str) -> set[str]:
        """What organisation ``holder`` may ever disclose to organisation ``requester`` for the purpose (rules 3
        and 4): what the holder's role supplies for it and the requester's role may receive, less what is never
        disclosed, and less a hit-only category when the holder answers with records. The policy's ``base``
        (``wgs.index.holder_facts``) from the same register; an escalation decision only narrows it, so this
        is for checks made before the policy is asked (an allow beyond it is one no re-run carries out).
        Empty when either organisation or the purpose is unknown."""
        partnership = self.partnerships.get(partnership_id)
        purpose = partnership.purposes.get(purpose_id) if partnership else None
        giver = partnership.participant_of_organisation(holder) if partnership else None
        taker = partnership.participant_of_organisation(requester) if partnership else None
        if purpose is None or giver is None or taker is None:
            return set()
        base = (set(purpose.supplies.get(giver.role, [])) & set(purpose.receives.get(taker.role, []))
                - self.never_disclosed(partnership_id))
        if giver.role in purpose.hit_only_holders:
            return base
        return base - {name for name, category in self.categories.items() if category.hit_only}
