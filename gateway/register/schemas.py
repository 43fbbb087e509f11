"""Response models of the register read API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from gateway.register.model import Category, Organisation, Partnership, Purpose


class RegisterView(BaseModel):
    version: str
    sha256: str
    categories: dict[str, Category]
    organisations: dict[str, Organisation]
    partnerships: dict[str, Partnership]


class PurposeView(BaseModel):
    partnership: str
    purpose: str
    register_version: str
    definition: Purpose


class PartnershipView(BaseModel):
    partnership: str
    register_version: str
    definition: Partnership


class VersionView(BaseModel):
    version: str
    sha256: str
    source: str
    loaded_at: datetime


class StoredRegisterView(BaseModel):
    version: str
    document: dict[str, Any]
