"""The holder protocol: what the gateway asks a partner system, what it answers, and how calls fail.

Exception tree (errors are converted at the HTTP edge, ``raise ... from``)::

    ConnectorError
    ├── HolderUnavailable      down, timed out, or 5xx after the retries allowed for the call
    ├── HolderRejectedRequest  the holder answered 4xx (e.g. our token was refused)
    └── HolderProtocolError    the answer does not match this protocol

Messages name the partner system and the request id, never a subject.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class ConnectorError(Exception):
    def __init__(self, system: str, message: str) -> None:
        super().__init__(f"{system}: {message}")
        self.system = system


class HolderUnavailable(ConnectorError):
    pass


class HolderRejectedRequest(ConnectorError):
    def __init__(self, system: str, message: str, status: int) -> None:
        super().__init__(system, message)
        self.status = status


class HolderProtocolError(ConnectorError):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HolderRecord(_Model):
    record_id: str
    record_type: str
    subject: str
    category: str
    fields: dict[str, Any]


class HolderQuery(_Model):
    request_id: str = Field(min_length=1, max_length=128, description="Deduplication key: retries are safe.")
    partnership: str
    purpose: str
    requester_organisation: str
    categories: list[str] = Field(min_length=1)
    subjects: list[str] = Field(min_length=1, max_length=100)
    provided: list[HolderRecord] = Field(default_factory=list,
                                         description="Records the requester lawfully hands to this holder.")


class HolderAnswer(_Model):
    status: Literal["answered", "refused"]
    received: int = Field(default=0, description="How many provided records the holder took in.")
    refusal_reason: str | None = None
    records: list[HolderRecord] = Field(default_factory=list)


class HolderDiscovery(_Model):
    request_id: str = Field(min_length=1, max_length=128)
    partnership: str
    purpose: str
    subjects: list[str] = Field(min_length=1, max_length=100)
    categories: list[str] = Field(default_factory=list, description="Only records of these categories count.")


class DiscoveryAnswer(_Model):
    hits: dict[str, list[str]] = Field(description="subject -> record types held (hit); absent = no hit")


class HolderConnector(Protocol):
    """The gateway's client side of one holder system."""

    system: str

    async def query(self, query: HolderQuery) -> HolderAnswer: ...

    async def discover(self, discovery: HolderDiscovery) -> DiscoveryAnswer: ...

    async def health(self) -> None: ...
