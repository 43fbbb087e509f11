"""How a call from the gateway to a holder system fails.

Our exception tree (httpx's exceptions never leave ``connectors``; they are converted at the HTTP edge with
``raise ... from`` so the cause stays in the traceback)::

    ConnectorError              any failure to get a valid answer from a holder
    ├── HolderUnavailable       down, refused the connection, timed out, or 5xx after the retries allowed
    ├── HolderRejectedRequest   the holder answered 4xx: our token, our request or our request id was refused
    └── HolderProtocolError     the holder answered, but not in this protocol (malformed or inconsistent)
        └── HolderAnswerMismatch    the answer names another request id: it answers another request

Every message starts with the partner system id and names the request id — never a subject, whose
reference may be personal data in the requester's hands. Callers map all three to the exchange outcome
``holder-unavailable`` (fail closed: no answer is never read as "no data").
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class: the holder ``system`` gave no valid answer. ``may_have_arrived`` says whether the holder may
    have received the call and acted on it (e.g. kept records the requester provided): True unless it is
    certain that it did not (no connection was ever made, or the holder refused the call with a 4xx)."""

    def __init__(self, system: str, message: str, *, may_have_arrived: bool = True) -> None:
        super().__init__(f"{system}: {message}")
        self.system = system
        self.may_have_arrived = may_have_arrived


class HolderUnavailable(ConnectorError):
    """The holder could not be reached in time, or kept failing with 5xx, after the retries allowed."""


class HolderRejectedRequest(ConnectorError):
    """The holder refused the call itself with a 4xx status (not a refusal to disclose, which is an answer)."""

    def __init__(self, system: str, message: str, status: int, *, may_have_arrived: bool = False) -> None:
        # refused: the holder kept nothing of this call (an earlier attempt of it may have arrived, though)
        super().__init__(system, message, may_have_arrived=may_have_arrived)
        self.status = status


class HolderProtocolError(ConnectorError):
    """The holder's answer does not match the holder protocol."""


class HolderAnswerMismatch(HolderProtocolError):
    """The answer names a request id other than the call's: it answers another request (a holder's cached or
    replayed answer, a proxy mixing up answers), about the same subjects and categories or not, and nothing
    in it is this request's. The exchange refuses it with its own reason (``answer-mismatch``): the holder, or
    what stands in front of it, misbehaved, which is not the same as being down."""
