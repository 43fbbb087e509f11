"""Checkpoints signed when a reviewer needs one, rate-limited and shared.

The :class:`~audit.log.CheckpointPolicy` signs every N entries or T seconds, so the entries a receipt cites
are in no checkpoint for up to T seconds, and nobody can check the receipt meanwhile (RFC 9162's "maximum
merge delay"). A reviewer who asks for a checkpoint covering an entry beyond the latest one gets one signed
now — the log only ever signs its own current tree, so that changes nothing about what a checkpoint proves.

What must not follow is that asking makes the gateway sign without bound: every signature is a row of an
append-only table, kept forever. So at most one checkpoint is signed on demand per ``min_interval`` seconds
on the database — whichever gateway process (worker, machine) is asked — and whoever asks while one is being
signed, or right after, is answered from it when it covers them: one signature serves everyone waiting. A
request that comes too soon gets :class:`~audit.errors.CheckpointPending` with the seconds to wait.

The interval was once kept per process, so N worker processes signed up to N checkpoints a second. Now the
time of the last on-demand signature is in the database (``audit_on_demand``), read and written under the
log's append lock in the transaction that stores the checkpoint (:meth:`audit.log.AuditLog.checkpoint_on_demand`):
every process sees every other's signature. Each process also remembers the last time it learnt of, so that
a request within the interval it already knows about is refused without taking the lock.

The interval runs on the machine's clock (``time.time``, injectable), not the log's (injectable, often frozen in
tests): it limits a rate, it says nothing about the log. Machines on one database keep their clocks close
(NTP); one that is behind by more than the interval signs when asked, as if the interval had passed, rather
than never (see ``checkpoint_on_demand``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from audit.errors import CheckpointPending, ProofUnavailable
from audit.log import AuditLog
from audit.store import StoredCheckpoint

DEFAULT_MIN_INTERVAL = 1.0
"""Seconds between two checkpoints signed on demand, by all processes on the database together."""


class OnDemandCheckpoints:
    """Hands out a checkpoint covering a given number of entries, signing one when none does (rate-limited)."""

    def __init__(self, log: AuditLog, *, min_interval: float = DEFAULT_MIN_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        if min_interval <= 0:
            raise ValueError("min_interval must be positive")
        self.log = log
        self.min_interval = min_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last_signed: float | None = None
        """The latest on-demand signature this process knows of (its own, or another's it was refused by)."""

    def covering(self, size: int) -> StoredCheckpoint:
        """The latest checkpoint if it covers at least ``size`` entries, else one signed now over the whole log.

        Raises :class:`~audit.errors.ProofUnavailable` when the log has fewer than ``size`` entries (nothing
        to sign that would help), :class:`~audit.errors.CheckpointPending` when a checkpoint was signed on
        demand, by any process on the database, less than ``min_interval`` ago. Blocking: call it in a worker
        thread.
        """
        if size < 1:
            raise ProofUnavailable("a checkpoint covers at least one entry")
        found = self._latest_covering(size)
        if found is not None:
            return found
        with self._lock:  # one signer per process at a time; the others then find its checkpoint
            found = self._latest_covering(size)
            if found is not None:
                return found
            current = self.log.size()
            if current < size:
                raise ProofUnavailable(f"the log has {current} entries, fewer than {size}")
            now = self.clock()
            if self._last_signed is not None and 0 <= now - self._last_signed < self.min_interval:
                raise CheckpointPending(self.min_interval - (now - self._last_signed))  # known here: no lock
            try:
                found, signed = self.log.checkpoint_on_demand(size, now=now, min_interval=self.min_interval)
            except CheckpointPending as pending:  # another process signed within the interval
                self._last_signed = now - (self.min_interval - pending.retry_after)
                raise
            if signed:
                self._last_signed = now
            return found  # signed now, or by another process since we looked

    def _latest_covering(self, size: int) -> StoredCheckpoint | None:
        try:
            latest = self.log.checkpoint()
        except ProofUnavailable:  # none issued yet
            return None
        return latest if latest.tree_size >= size else None
