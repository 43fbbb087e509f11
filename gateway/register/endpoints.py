"""Read API of the partnership register (scope ``register:read``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from gateway.auth.dependencies import require_scope
from gateway.auth.principal import Principal, Scope
from gateway.clock import as_utc
from gateway.container import Container
from gateway.deps import get_container, get_session
from gateway.errors import NotFound
from gateway.register import repository
from gateway.register.schemas import PartnershipView, PurposeView, RegisterView, StoredRegisterView, VersionView
from gateway.register.setup import register_service

router = APIRouter(prefix="/v1/register", tags=["register"])
_reader = require_scope(Scope.REGISTER_READ)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown partnership, purpose or version"}}


@router.get("", response_model=RegisterView, summary="The register in force")
def current_register(container: Container = Depends(get_container),
                     _principal: Principal = Depends(_reader)) -> RegisterView:
    service = register_service(container)
    register = service.current()
    return RegisterView(version=register.version, sha256=service.digest, categories=register.categories,
                        organisations=register.organisations, partnerships=register.partnerships)


@router.get("/partnerships/{partnership_id}", response_model=PartnershipView, responses=_NOT_FOUND,
            summary="One partnership: status, participants, purposes")
def partnership(partnership_id: str, container: Container = Depends(get_container),
                _principal: Principal = Depends(_reader)) -> PartnershipView:
    register = register_service(container).current()
    found = register.partnerships.get(partnership_id)
    if found is None:
        raise NotFound(f"no partnership `{partnership_id}` in register {register.version}")
    return PartnershipView(partnership=partnership_id, register_version=register.version, definition=found)


@router.get("/partnerships/{partnership_id}/purposes/{purpose_id}", response_model=PurposeView,
            responses=_NOT_FOUND, summary="One purpose: legal basis, who may request, who supplies what")
def purpose(partnership_id: str, purpose_id: str, container: Container = Depends(get_container),
            _principal: Principal = Depends(_reader)) -> PurposeView:
    register = register_service(container).current()
    found = register.partnerships.get(partnership_id)
    if found is None or purpose_id not in found.purposes:
        raise NotFound(f"no purpose `{purpose_id}` in partnership `{partnership_id}`")
    return PurposeView(partnership=partnership_id, purpose=purpose_id, register_version=register.version,
                       definition=found.purposes[purpose_id])


@router.get("/versions", response_model=list[VersionView], summary="Every register version recorded")
def versions(session: Session = Depends(get_session),
             _principal: Principal = Depends(_reader)) -> list[VersionView]:
    return [VersionView(version=v.version, sha256=v.sha256, source=v.source, loaded_at=as_utc(v.loaded_at))
            for v in repository.list_versions(session)]


@router.get("/versions/{version}", response_model=StoredRegisterView, responses=_NOT_FOUND,
            summary="A recorded register version, as it was (history stays readable)")
def stored_version(version: str, session: Session = Depends(get_session),
                   _principal: Principal = Depends(_reader)) -> StoredRegisterView:
    document = repository.get_document(session, version)
    if document is None:
        raise NotFound(f"no register version `{version}` recorded")
    return StoredRegisterView(version=version, document=document)
