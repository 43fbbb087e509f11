"""Who may enrol into, or look up in, a partnership's indexes: a partner system the register lists for an
active participant — the system, not only its organisation, as the policy asks of a requester (rule 1). An
organisation's system listed for another partnership only (or a participant listing no system) wrote into the
organisation's index in every partnership the organisation takes part in (found by a review)."""

from __future__ import annotations

import pytest
import yaml

from gateway.auth.principal import Principal
from gateway.enrolment.service import participant_of
from gateway.errors import Forbidden
from gateway.register.loader import parse_register
from gateway.register.model import Register
from gateway.settings import SHIPPED_REGISTER

RIEC = "riec-amsterdam-amstelland"
ELSEWHERE = "kvk-elsewhere"  # the KvK's second system, listed in no partnership


def _register_with_a_second_kvk_system() -> Register:
    document = yaml.safe_load(SHIPPED_REGISTER.read_text())
    document["version"] = f"{document['version']}-kvk-elsewhere"
    document["organisations"]["kvk"]["systems"].append(ELSEWHERE)
    return parse_register(yaml.safe_dump(document, sort_keys=False), "register.yaml")


def _system(subject: str) -> Principal:
    return Principal(kind="system", subject=subject, organisation="kvk", scopes=frozenset({"enrol"}))


def test_only_a_system_listed_for_the_participant_enrols() -> None:
    register = _register_with_a_second_kvk_system()
    assert participant_of(register, _system("kvk-handelsregister"), RIEC) == "kvk"
    with pytest.raises(Forbidden) as refused:
        participant_of(register, _system(ELSEWHERE), RIEC)
    assert refused.value.status == 403
    assert ELSEWHERE in refused.value.detail
