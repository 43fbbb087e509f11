"""Wiring of the pseudonym service: the key store (a file under the key directory by default; the
``KeyStore`` protocol admits others), the transcryptor, and the exchange's link to it; and of the fuzzy
discovery index (match filters) beside it. Both indexes log their
enrolments through the audit writer; what they hold for a retired participation is removed at every start
(:func:`remove_retired_at_start`)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import structlog

from gateway.auditing.setup import audit_services
from gateway.container import Container
from gateway.enrolment.filters import FilterService
from gateway.enrolment.quota import DailyPseudonymQuota
from gateway.enrolment.retired import remove_retired
from gateway.enrolment.service import PseudonymService
from gateway.exchange.fuzzy import FuzzyDiscovery
from gateway.exchange.match_handles import MatchHandles
from gateway.exchange.setup import exchange_service
from gateway.pseudonyms.following import FollowedTranscryptor
from gateway.pseudonyms.keystore import FileKeyStore
from gateway.register.setup import register_service

log = structlog.get_logger("gateway.enrolment")


def pseudonym_keystore(container: Container) -> FileKeyStore:
    return FileKeyStore(container.settings.key_dir / "pseudonyms", clock=container.clock)


def install_pseudonyms(container: Container) -> PseudonymService:
    # Creates key version 1 on first start. Start-up runs inside the server's event loop, so the store's
    # async API is driven on a short-lived thread of its own. From then on the service follows the file: a
    # rotation by the CLI (another process) is in force from the next request, with no restart.
    store = pseudonym_keystore(container)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, store.initialise()).result()
    service = PseudonymService(sessions=container.sessions, clock=container.clock,
                               register=register_service(container).current(),
                               transcryptor=FollowedTranscryptor(store),
                               quota=DailyPseudonymQuota(container.sessions, container.clock,
                                                                 container.settings.pseudonym_daily_limit),
                               writer=audit_services(container).writer)
    container.services["pseudonyms"] = service
    exchange_service(container).deps.pseudonyms = service
    return service


def pseudonym_service(container: Container) -> PseudonymService:
    return container.service("pseudonyms", PseudonymService)


def install_filters(container: Container) -> FuzzyDiscovery:
    """The fuzzy discovery index, fuzzy discovery itself (after the exchange: it decides and logs with it) and
    the match handles of its hits, which the exchange resolves when a follow-up cites one."""
    filters = FilterService(sessions=container.sessions, clock=container.clock,
                            register=register_service(container).current(), writer=audit_services(container).writer,
                            cache_bytes=container.settings.fuzzy_cache_bytes,
                            max_records=container.settings.match_filter_limit,
                            replacement_ttl=timedelta(seconds=container.settings.match_filter_replacement_ttl_seconds))
    handles = MatchHandles(container.sessions, container.clock,
                           timedelta(seconds=container.settings.match_handle_ttl_seconds))
    exchange = exchange_service(container)
    exchange.deps.match_handles = handles  # follow-up exchanges resolve the handles fuzzy discovery issues
    fuzzy = FuzzyDiscovery(exchange, filters, handles)
    container.services["filters"] = filters
    container.services["fuzzy_discovery"] = fuzzy
    return fuzzy


def filter_service(container: Container) -> FilterService:
    return container.service("filters", FilterService)


def fuzzy_discovery(container: Container) -> FuzzyDiscovery:
    return container.service("fuzzy_discovery", FuzzyDiscovery)


def remove_retired_at_start(container: Container) -> None:
    """Remove the index rows of every participation the register in force retires (:mod:`gateway.enrolment.
    retired`), before the gateway answers anything.

    The register changes only when a process starts with a new file, so start-up is when a retirement takes
    effect; a register that retires nothing costs no statement, one whose retired rows are gone already a few
    indexed look-ups. Run before the audit writer starts, each batch
    is appended by the log itself, as the register change is (``record_register_change``). A failure does not
    stop the start: each batch was written with its entry or not at all, the rows left are denied to discovery
    by the policy (``holder-retired``, ``partnership-retired``) and unreachable for enrolment, and the next start
    or ``wgs-gateway pseudonyms remove-retired`` finishes the removal. It is logged by its kind only."""
    try:
        result = remove_retired(container.sessions, register_service(container).current(),
                                audit_services(container).log, channel="start-up")
    except Exception as exc:
        log.error("retired_index_rows_not_removed", error_type=type(exc).__name__)
        return
    if result.removed:
        log.info("retired_index_rows_removed", rows=result.removed,
                 participations=len({removal.retirement for removal in result.removals}))


def remove_abandoned_at_start(container: Container) -> None:
    """Remove the kept records of match-filter replacements abandoned before this start (:mod:`gateway.
    enrolment.replacement`): they are removed before each replacement batch as well, but a participant that
    never sends one again would leave them. A failure does not stop the start (they are never answered from,
    and the next batch or start removes them); it is logged by its kind only."""
    try:
        removed = filter_service(container).remove_abandoned()
    except Exception as exc:
        log.error("abandoned_replacements_not_removed", error_type=type(exc).__name__)
        return
    if removed:
        log.info("abandoned_replacements_removed", rows=removed)
