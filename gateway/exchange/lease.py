"""The lease on what an exchange attempt reserves, and the settings bound that keeps its holder calls inside it.

An attempt with an ``Idempotency-Key`` claims the key with its write-ahead entries, and a re-run citing an
escalation decision reserves the decision before it is decided; both are leases of
:data:`CLAIM_ABANDONED_AFTER`. Past it the attempt counts as dead: a retry (another re-run) takes the key (the
decision) over and asks the holders again, under new request ids, so the holders would disclose twice (the
first attempt's later commit is refused, and its answers dropped). So an attempt must be done with its holders,
and have logged what they answered, well inside the lease, in every gateway process.

The lease stays one fixed time, the same in every process and known to the partners' clients (``gateway.client``
waits out a busy key for up to two minutes); instead, the settings whose slowest attempt could outlast it are
refused at start-up (:func:`leased_work_problem`, checked by ``gateway.settings.Settings``). What counts, from
the moment the lease is taken:

1. the policy decisions made under it: at most :data:`DECISION_ROUNDS`, each bounded by the OPA server's
   timeout (a re-run reserves its decision before the first; the embedded engine has no network wait);
2. the holder calls, made in parallel (one call per holder, its parts together): the connector's timeout per
   attempt, times the attempts, plus the backoff between them (:func:`longest_holder_call`);
3. what has no timeout of its own — the write-ahead's and the disclosures' commits waiting for the audit
   writer, pseudonym work, the checkpoint — gets the :data:`LEASE_MARGIN` left over.

Because the bound is checked per process against the one fixed lease, processes with different settings are
each safe: a taker never needs to know the claimant's settings.
"""

from __future__ import annotations

from datetime import timedelta

CLAIM_ABANDONED_AFTER = timedelta(minutes=2)
"""An attempt holding an ``Idempotency-Key`` (or a re-run holding an escalation decision) longer than this has
died: a retry may then take it over. Its holder calls end far sooner (:func:`leased_work_problem`)."""
LEASE_MARGIN = timedelta(seconds=30)
"""The part of the lease kept free for the waits that have no timeout of their own (see the module docstring)."""
DECISION_ROUNDS = 3
"""How often a request is decided again when rule 6's count crossed the limit meanwhile: once is the rule
(the second decision is made with a count already past the limit), three allows for give-backs meanwhile."""
HOLDER_RETRY_BACKOFF_SECONDS = 0.05
"""The connector's first backoff before a retry (doubled before each next one), as the gateway configures it."""


def longest_holder_call(timeout: float, retries: int, backoff: float = HOLDER_RETRY_BACKOFF_SECONDS) -> float:
    """Seconds one holder call may take at most: every attempt bounded by ``timeout``, with the backoff before
    each retry (``backoff``, then twice that, ...). The token is made locally, inside no network wait."""
    return timeout * (retries + 1) + backoff * (2.0 ** retries - 1)


def longest_leased_work(connector_timeout: float, connector_retries: int, policy_timeout: float | None) -> float:
    """Seconds an attempt's bounded waits under its lease may take at most: its policy decisions
    (``policy_timeout``: the OPA server's; None for the embedded engine) and its holder calls."""
    return DECISION_ROUNDS * (policy_timeout or 0.0) + longest_holder_call(connector_timeout, connector_retries)


def leased_work_problem(connector_timeout: float, connector_retries: int, policy_timeout: float | None) -> str | None:
    """One line for the operator when these settings let an attempt outlast its lease, else None."""
    longest = longest_leased_work(connector_timeout, connector_retries, policy_timeout)
    bound = (CLAIM_ABANDONED_AFTER - LEASE_MARGIN).total_seconds()
    if longest <= bound:
        return None
    decisions = f" + {DECISION_ROUNDS} * WGS_OPA_TIMEOUT_SECONDS" if policy_timeout else ""
    return (f"WGS_CONNECTOR_TIMEOUT_SECONDS * (WGS_CONNECTOR_RETRIES + 1) + backoff{decisions} comes to "
            f"{longest:.1f} s, more than the {bound:.0f} s allowed: an exchange's holder calls must end well inside "
            f"the {CLAIM_ABANDONED_AFTER.total_seconds():.0f} s lease on its Idempotency-Key (and a re-run's "
            "escalation decision), or a retry takes it over and asks the holders a second time; lower the timeout "
            "or the retries")
