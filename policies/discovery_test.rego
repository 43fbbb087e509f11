# Rego unit tests of wgs.discovery: hit/no-hit queries are purpose-bound like exchanges.
package wgs.discovery_test

import rego.v1

import data.wgs.discovery

_input(changes) := {"request": object.union({
	"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
	"legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-1",
	"signal": {"type": "bibob-application", "reference": "B-1"},
	"categories": ["company_registration"], "subject_count": 1, "subjects_minor": false,
	"requester": {"organisation": "gemeente-amsterdam", "system": "gemeente-amsterdam-vth"},
	"holder": {"organisation": "kvk"}, "requested_at": "2026-11-25T10:00:00Z",
}, changes), "context": {}, "request_fingerprint": "fp"}

test_discovery_allowed_within_the_purpose if {
	d := discovery.decision with input as _input({})
	d.outcome == "allowed"
	d.hit_only
	d.permitted_categories == ["company_registration"]
}

test_discovery_denied_when_the_holder_supplies_nothing_asked if {
	d := discovery.decision with input as _input({"holder": {"organisation": "politie"}})
	d.outcome == "denied"
}

test_discovery_denied_for_a_non_participant if {
	d := discovery.decision with input as _input({"requester": {"organisation": "abn-amro", "system": "abn-amro-fec"}})
	some r in d.reasons
	r.code == "requester-not-participant"
}

test_discovery_denied_for_minors_outside_youth_prevention if {
	d := discovery.decision with input as _input({"subjects_minor": true})
	d.outcome == "denied"
}

test_discovery_skips_a_hit_only_category_of_a_holder_answering_records if {
	register := json.patch(data.register, [{"op": "add", "path": "/partnerships/riec-amsterdam-amstelland/purposes/bibob-integrity-check/supplies/police/-", "value": "ongoing_investigation"}])
	d := discovery.decision with input as _input({"holder": {"organisation": "politie"}, "categories": ["police_incidents", "ongoing_investigation"]}) with data.register as register
	d.outcome == "allowed"
	d.permitted_categories == ["police_incidents"]
}
