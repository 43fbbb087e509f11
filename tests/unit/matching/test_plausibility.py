"""The gateway's bound on a filter's density (``gateway.matching.plausibility``): every refused filter is named
with its reason, real records with very long names are among them, and the gateway and the partner's client
check with this one function rather than copies of it."""

from __future__ import annotations

import numpy as np

from gateway.client import fuzzy_requests
from gateway.enrolment import filters as gateway_filters
from gateway.matching import lookup
from gateway.matching.encoding import CLKEncoder
from gateway.matching.plausibility import MAX_DENSITY, Implausibility, implausibilities, implausible
from gateway.matching.schema import shipped_schema

SECRET = b"plausibility-test-partnership-key"
LONG_NAMED = {"given_name": "Johannes Cornelis Maria", "surname": "van Oldenbarnevelt-Schimmelpenninck",
              "date_of_birth": "19620417", "address_1": "Burgemeester van Karnebeeklaan", "street_number": "112",
              "postcode": "2585BE", "suburb": "s-Gravenhage"}
SHORT_NAMED = {"given_name": "michaela", "surname": "neumann", "date_of_birth": "19151111"}


def test_every_refused_filter_is_named_with_its_reason() -> None:
    encoder = CLKEncoder(shipped_schema("person"), SECRET)
    filters = encoder.encode([SHORT_NAMED, LONG_NAMED, {}, SHORT_NAMED | {"surname": "jansen"}])
    assert implausibilities(filters) == {1: Implausibility.TOO_DENSE, 2: Implausibility.EMPTY}
    assert implausible(filters) == 1
    assert implausibilities(filters[[0, 3]]) == {}
    assert implausibilities(filters[:0]) == {}


def test_a_real_record_with_very_long_names_is_too_dense_and_a_saturated_filter_too() -> None:
    """Why the client must leave such records out: the bound refuses a real person, not only a probe."""
    filters = CLKEncoder(shipped_schema("person"), SECRET).encode([LONG_NAMED])
    bits = shipped_schema("person").filter_bits
    assert int(np.unpackbits(filters.view(np.uint8)).sum()) > MAX_DENSITY * bits
    saturated = np.full((1, bits // 64), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    assert implausibilities(saturated) == {0: Implausibility.TOO_DENSE}
    at_the_bound = np.packbits(np.arange(bits) < int(MAX_DENSITY * bits)).view(">u8").astype(np.uint64)
    assert implausibilities(at_the_bound.reshape(1, -1)) == {}


def test_the_gateway_and_the_client_use_one_rule() -> None:
    assert lookup.implausible is implausible
    assert lookup.MAX_DENSITY == MAX_DENSITY
    assert vars(gateway_filters)["implausibilities"] is implausibilities  # the name each module calls
    assert vars(fuzzy_requests)["implausibilities"] is implausibilities
