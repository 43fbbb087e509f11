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

# Nor may a police, tax or prosecution requester hand its records to a private participant (a bank, REGISTER.md
# FEC: police, tax and prosecution data reaches it as hit/no-hit only), whatever the register data says (the
# loader refuses a register saying so).
_tax_hands_banks_records := json.patch(data.register, [
	{"op": "replace", "path": "/partnerships/fec/purposes/taskforce-subject-check/requesters", "value": ["bank", "tax"]},
	{"op": "add", "path": "/partnerships/fec/purposes/taskforce-subject-check/supplies/tax", "value": ["tax_compliance"]},
	{"op": "add", "path": "/partnerships/fec/purposes/taskforce-subject-check/supplies/bank", "value": ["bank_accounts"]},
	{"op": "add", "path": "/partnerships/fec/purposes/taskforce-subject-check/receives/tax", "value": ["bank_accounts"]},
	{"op": "replace", "path": "/partnerships/fec/purposes/taskforce-subject-check/receives/bank", "value": ["ongoing_investigation", "tax_compliance"]},
])

_tax_asks_a_bank := object.union(_malafide, {"request": object.union(_malafide.request, {
	"partnership": "fec", "purpose": "taskforce-subject-check", "legal_basis": "WGS (FEC) with covenant",
	"holder": {"organisation": "abn-amro"}, "categories": ["bank_accounts"],
})})

test_tax_may_not_hand_its_records_to_a_bank if {
	d := exchange.decision with input as _tax_asks_a_bank with data.register as _tax_hands_banks_records
	d.outcome == "denied"
	some r in d.reasons
	r.code == "provision-not-allowed"
	r.category == "tax_compliance"
}

test_tax_may_hand_the_same_to_a_public_participant_in_the_role if {
	register := json.patch(_tax_hands_banks_records, [{"op": "replace", "path": "/organisations/abn-amro/sector", "value": "public"}, {"op": "replace", "path": "/organisations/rabobank/sector", "value": "public"}])
	d := exchange.decision with input as _tax_asks_a_bank with data.register as register
	d.outcome == "allowed"
	d.permitted_categories == ["bank_accounts"]
}
