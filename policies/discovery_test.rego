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
}, changes), "context": {"requests_today": 0}, "request_fingerprint": "fp"}

test_discovery_allowed_within_the_purpose if {
	d := discovery.decision with input as _input({})
	d.outcome == "allowed"
	d.hit_only
	d.permitted_categories == ["company_registration"]
}

# Every decision names the register it was made under by its digest (see wgs.exchange_test).
test_discovery_decisions_carry_the_register_digest_they_read if {
	digested := object.union(data.register, {"sha256": "another-digest"})
	d := discovery.decision with input as _input({}) with data.register as digested
	d.register_sha256 == "another-digest"
	batch := object.union(object.remove(_input({}), ["request"]), {"request": object.remove(_input({}).request, ["holder"]), "holders": [{"organisation": "kvk"}]})
	digests := [b.register_sha256 | some b in discovery.decisions] with input as batch with data.register as digested
	digests == ["another-digest"]
}

# Every decision names the holder it is for (see wgs.exchange_test).
test_discovery_decisions_name_their_holder if {
	d := discovery.decision with input as _input({})
	d.holder == "kvk"
	batch := object.union(object.remove(_input({}), ["request"]), {"request": object.remove(_input({}).request, ["holder"]), "holders": [{"organisation": "politie"}, {"organisation": "kvk"}]})
	ds := discovery.decisions with input as batch
	[b.holder | some b in ds] == ["politie", "kvk"]
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
	d.outcome == "allowed-narrowed"
	d.permitted_categories == ["police_incidents"]
	d.removed_categories == ["ongoing_investigation"]
	[r.code | some r in d.reasons] == ["hit-only-category"]
}

# Rules 3 and 4 for discovery as for an exchange: a requested category of the holder's that is not searched
# is removed with its reason (S11: asking about criminal intelligence was answered `hit` on the police's
# incidents, and neither the requester nor the log learnt that the intelligence was not searched).
test_discovery_removes_criminal_intelligence_with_its_reason_s11 if {
	d := discovery.decision with input as _input({"holder": {"organisation": "politie"}, "categories": ["police_incidents", "criminal_intelligence"]})
	d.outcome == "allowed-narrowed"
	d.allow
	d.permitted_categories == ["police_incidents"]
	d.removed_categories == ["criminal_intelligence"]
	[[r.code, r.category] | some r in d.reasons] == [["never-disclosed", "criminal_intelligence"]]
}

test_discovery_is_narrowed_as_the_exchange_is_s1 if {
	d := discovery.decision with input as _input({"holder": {"organisation": "belastingdienst"}, "categories": ["tax_debts", "income", "company_registration"]})
	d.outcome == "allowed-narrowed"
	d.permitted_categories == ["tax_debts"]
	d.removed_categories == ["income"]
	[[r.code, r.category] | some r in d.reasons] == [["category-not-supplied", "income"]]
}

test_denied_discovery_names_its_removed_categories_too if {
	d := discovery.decision with input as _input({"holder": {"organisation": "politie"}, "categories": ["criminal_intelligence"]})
	d.outcome == "denied"
	d.removed_categories == ["criminal_intelligence"]
	{[r.code, object.get(r, "category", null)] | some r in d.reasons} == {["never-disclosed", "criminal_intelligence"], ["no-permitted-categories", null]}
}

# Rules 6-8 apply to discovery as to an exchange.
_codes(d) := {r.code | some r in d.reasons}

_with_context(changes, context) := object.union(_input(changes), {"context": context})

test_discovery_of_many_subjects_escalates if {
	d := discovery.decision with input as _input({"subject_count": 40})
	d.outcome == "escalated"
	d.escalate
	not d.allow
	d.permitted_categories == []
	_codes(d) == {"bulk-request"}
}

test_discovery_of_25_subjects_is_not_bulk if {
	d := discovery.decision with input as _input({"subject_count": 25})
	d.outcome == "allowed"
}

test_discovery_over_the_daily_limit_escalates if {
	d := discovery.decision with input as _with_context({}, {"requests_today": 200})
	d.outcome == "escalated"
	_codes(d) == {"daily-limit"}
	below := discovery.decision with input as _with_context({}, {"requests_today": 199})
	below.outcome == "allowed"
}

test_discovery_outside_office_hours_escalates if {
	d := discovery.decision with input as _input({"requested_at": "2026-11-28T10:00:00Z"}) # Saturday
	d.outcome == "escalated"
	_codes(d) == {"outside-office-hours"}
}

test_discovery_for_an_urgent_purpose_is_not_escalated_at_night if {
	register := json.patch(data.register, [{"op": "add", "path": "/partnerships/riec-amsterdam-amstelland/purposes/bibob-integrity-check/urgent", "value": true}])
	d := discovery.decision with input as _input({"requested_at": "2026-11-25T23:00:00Z"}) with data.register as register
	d.outcome == "allowed"
}

test_discovery_denial_beats_escalation if {
	d := discovery.decision with input as _input({"subject_count": 40, "subjects_minor": true})
	d.outcome == "denied"
	_codes(d) == {"minors-not-allowed", "bulk-request"}
}

_decided(changes, holder, valid_until, categories) := _with_context(object.union({"subject_count": 40, "categories": ["company_registration", "directorships"]}, changes), {"requests_today": 500, "escalation_decision": {
	"id": "dec-7", "request_fingerprint": "fp", "holder": holder, "valid_until": valid_until,
	"permitted_categories": categories,
}})

test_valid_decision_overrides_rules_6_and_7_for_discovery_and_bounds_it if {
	d := discovery.decision with input as _decided({"requested_at": "2026-11-28T10:00:00Z"}, "kvk", "2026-12-01T00:00:00Z", ["company_registration", "tax_debts"])
	d.outcome == "allowed-narrowed"
	d.permitted_categories == ["company_registration"]
	d.removed_categories == ["directorships"]
	d.escalation_decision == "dec-7"
	[[r.code, r.category] | some r in d.reasons] == [["narrowed-by-escalation-decision", "directorships"]]
}

test_expired_or_other_holders_decision_does_not_override_discovery if {
	expired := discovery.decision with input as _decided({}, "kvk", "2026-11-01T00:00:00Z", ["company_registration"])
	expired.outcome == "escalated"
	expired.escalation_decision == null
	other := discovery.decision with input as _decided({}, "politie", "2026-12-01T00:00:00Z", ["company_registration"])
	other.outcome == "escalated"
	_codes(other) == {"bulk-request", "daily-limit"}
}

test_decision_without_an_id_does_not_override_discovery if {
	i := _decided({}, "kvk", "2026-12-01T00:00:00Z", ["company_registration"])
	d := discovery.decision with input as object.union(i, {"context": {"escalation_decision": {"id": null}}})
	d.outcome == "escalated"
	d.escalation_decision == null
}

test_decision_stating_nothing_searchable_denies_discovery if {
	d := discovery.decision with input as _decided({}, "kvk", "2026-12-01T00:00:00Z", ["tax_debts"])
	d.outcome == "denied"
	_codes(d) == {"no-permitted-categories", "narrowed-by-escalation-decision"}
	d.removed_categories == ["company_registration", "directorships"]
}

# Rule 1 for discovery too: nothing before the partnership is established (in Amsterdam).
test_discovery_before_the_partnership_is_established_denies if {
	register := json.patch(data.register, [{"op": "replace", "path": "/partnerships/riec-amsterdam-amstelland/established", "value": "2026-11-26"}])
	d := discovery.decision with input as _input({}) with data.register as register
	d.outcome == "denied"
	_codes(d) == {"partnership-not-established"}
}

# Rule 6 for discovery too: without a non-negative integer daily count the request is denied.
test_discovery_without_a_valid_daily_count_denies if {
	every context in [{}, {"requests_today": "0"}, {"requests_today": -1}, {"requests_today": 0.5}] {
		d := discovery.decision with input as object.union(object.remove(_input({}), ["context"]), {"context": context})
		d.outcome == "denied"
		"input-incomplete" in _codes(d)
	}
	negative := discovery.decision with input as _input({"subject_count": -40})
	negative.outcome == "denied"
	"input-incomplete" in _codes(negative)
}

# Rules 1 and 7 for discovery too: without a valid `requested_at` the request is denied as incomplete (see
# wgs.exchange_test).
test_discovery_without_a_valid_requested_at_denies if {
	every at in [null, "", "2026-02-30T10:00:00Z", "2026-11-25 10:00:00Z"] {
		d := discovery.decision with input as _input({"requested_at": at})
		d.outcome == "denied"
		_codes(d) == {"input-incomplete"}
	}
	i := _input({})
	missing := discovery.decision with input as object.union(object.remove(i, ["request"]), {"request": object.remove(i.request, ["requested_at"])})
	missing.outcome == "denied"
	"input-incomplete" in _codes(missing)
}

# Rule 2 fails closed in discovery too: no legal basis, no hit/no-hit (it was allowed).
test_discovery_without_a_legal_basis_denies if {
	d := discovery.decision with input as json.remove(_input({}), ["request/legal_basis"])
	d.outcome == "denied"
	_codes(d) == {"legal-basis-mismatch"}
}

# The categories asked about must be a non-empty list of names (see wgs.exchange_test).
test_discovery_with_categories_that_are_no_list_of_names_denies if {
	every categories in [null, "company_registration", 5, [5], []] {
		d := discovery.decision with input as _input({"categories": categories})
		d.outcome == "denied"
		"input-incomplete" in _codes(d)
	}
}

# A requester naming no system is no participant, with that reason (see wgs.exchange_test).
test_discovery_by_a_requester_without_a_system_is_denied_with_its_reason if {
	d := discovery.decision with input as json.patch(_input({}), [{"op": "replace", "path": "/request/requester", "value": {"organisation": "gemeente-amsterdam"}}])
	d.outcome == "denied"
	"requester-not-participant" in _codes(d)
}
