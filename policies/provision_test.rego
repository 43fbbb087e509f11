# Rego unit tests of handing data to the holder with a request (S2: dissolution grounds to the KvK).
package wgs.provision_test

import rego.v1

import data.wgs.exchange

_malafide := {
	"request": {
		"partnership": "riec-amsterdam-amstelland", "purpose": "malafide-company-dissolution",
		"legal_basis": "WGS (RIEC) with BW 2:19a", "case_reference": "BD-2026-9",
		"signal": {"type": "missing-returns", "reference": "BD-SIG-77"},
		"categories": ["company_registration", "directorships"], "subject_count": 1, "subjects_minor": false,
		"requester": {"organisation": "belastingdienst", "system": "belastingdienst-ivs"},
		"holder": {"organisation": "kvk", "system": "kvk-handelsregister"},
		"requested_at": "2026-11-25T10:00:00Z", "provided_categories": ["tax_compliance"],
	},
	"context": {"requests_today": 0},
	"request_fingerprint": "f",
}

test_tax_may_hand_dissolution_grounds_to_the_kvk if {
	exchange.decision.outcome == "allowed" with input as _malafide
}

test_tax_may_not_hand_income_to_the_kvk if {
	d := exchange.decision with input as object.union(_malafide, {"request": object.union(_malafide.request, {"provided_categories": ["income"]})})
	d.outcome == "denied"
	some r in d.reasons
	r.code == "provision-not-allowed"
	r.category == "income"
}

test_nobody_may_hand_criminal_intelligence if {
	d := exchange.decision with input as object.union(_malafide, {"request": object.union(_malafide.request, {"provided_categories": ["criminal_intelligence"]})})
	d.outcome == "denied"
}

# A hit-only category is never disclosed as records (rule 3), so nobody may hand its records over either: a
# register (which the loader accepts) where the hit/no-hit holder of the purpose is also a requester and the
# holder may receive the category.
_investigation_requests := json.patch(data.register, [
	{"op": "add", "path": "/partnerships/riec-amsterdam-amstelland/purposes/bibob-integrity-check/requesters/-", "value": "investigation"},
	{"op": "add", "path": "/partnerships/riec-amsterdam-amstelland/purposes/bibob-integrity-check/receives/investigation", "value": ["permits"]},
	{"op": "add", "path": "/partnerships/riec-amsterdam-amstelland/purposes/bibob-integrity-check/supplies/municipality", "value": ["permits"]},
])

_fiod_asks_the_municipality(provided) := {
	"request": {
		"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
		"legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "FIOD-1",
		"signal": {"type": "tip", "reference": "T-1"},
		"categories": ["permits"], "subject_count": 1, "subjects_minor": false,
		"requester": {"organisation": "fiod", "system": "fiod-ois"},
		"holder": {"organisation": "gemeente-amsterdam"},
		"requested_at": "2026-11-25T10:00:00Z", "provided_categories": provided,
	},
	"context": {"requests_today": 0},
	"request_fingerprint": "f",
}

test_nobody_may_hand_records_of_a_hit_only_category if {
	asked := exchange.decision with input as _fiod_asks_the_municipality([]) with data.register as _investigation_requests
	asked.outcome == "allowed"
	d := exchange.decision with input as _fiod_asks_the_municipality(["ongoing_investigation"]) with data.register as _investigation_requests
	d.outcome == "denied"
	some r in d.reasons
	r.code == "provision-not-allowed"
	r.category == "ongoing_investigation"
}
