# Rego unit tests of wgs.exchange: every rule of REGISTER.md, allow and deny. Run by pytest
# (tests/unit/policy/test_rego_unit_tests.py) with the shipped register as data.register.
package wgs.exchange_test

import rego.v1

import data.wgs.exchange

_base := {
	"request": {
		"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
		"legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-1",
		"signal": {"type": "bibob-application", "reference": "B-1"},
		"categories": ["police_incidents"], "subject_count": 1, "subjects_minor": false,
		"requester": {"organisation": "gemeente-amsterdam", "system": "gemeente-amsterdam-vth"},
		"holder": {"organisation": "politie", "system": "politie-bvh"},
		"requested_at": "2026-11-25T10:00:00Z",
	},
	"context": {"requests_today": 0},
	"request_fingerprint": "fp-1",
}

_with(changes) := object.union(_base, {"request": object.union(_base.request, changes)})

_decide(changes) := d if {
	d := exchange.decision with input as _with(changes)
}

_codes(d) := {r.code | some r in d.reasons}

# Rule 1: participants, purpose, retired partnership.
test_allowed_for_an_active_participant_of_an_active_partnership if {
	d := _decide({})
	d.outcome == "allowed"
	d.allow
	d.permitted_categories == ["police_incidents"]
}

test_retired_partnership_denies_everything if {
	d := _decide({"partnership": "nsoc", "purpose": "undermining-analysis", "legal_basis": "WGS (NSOC)"})
	d.outcome == "denied"
	"partnership-retired" in _codes(d)
}

test_unknown_partnership_denies if "unknown-partnership" in _codes(_decide({"partnership": "riec-utrecht"}))

test_purpose_of_another_partnership_denies if {
	"purpose-not-in-partnership" in _codes(_decide({"purpose": "youth-prevention"}))
}

test_requester_not_a_participant_denies_s3 if {
	d := _decide({"requester": {"organisation": "abn-amro", "system": "abn-amro-fec"}})
	"requester-not-participant" in _codes(d)
}

# A denial lists as removed exactly the categories rules 3 and 4 remove, each with its reason, whoever
# asks: a category the holder supplies is not removed from a requester that is no participant (rule 1
# denies it all, one reason), as it is not from a participant of a retired partnership.
_removed_have_reasons(d) if {
	every c in d.removed_categories {
		some r in d.reasons
		r.category == c
	}
}

test_denial_of_a_non_participant_removes_only_categories_with_a_reason if {
	d := _decide({"requester": {"organisation": "abn-amro", "system": "abn-amro-fec"}, "categories": ["police_incidents", "criminal_intelligence"]})
	d.outcome == "denied"
	d.removed_categories == ["criminal_intelligence"]
	_removed_have_reasons(d)
}

test_denial_of_a_retired_partnership_removes_only_categories_with_a_reason if {
	every requester in [{"organisation": "abn-amro", "system": "abn-amro-fec"}, {"organisation": "gemeente-amsterdam", "system": "gemeente-amsterdam-vth"}] {
		d := _decide({"partnership": "nsoc", "purpose": "undermining-analysis", "legal_basis": "WGS (NSOC)", "requester": requester, "categories": ["police_incidents", "criminal_intelligence"]})
		d.outcome == "denied"
		d.removed_categories == ["criminal_intelligence"]
		_removed_have_reasons(d)
	}
}

test_requester_system_of_another_organisation_denies if {
	"requester-not-participant" in _codes(_decide({"requester": {"organisation": "gemeente-amsterdam", "system": "politie-bvh"}}))
}

test_holder_not_a_participant_denies if "holder-not-participant" in _codes(_decide({"holder": {"organisation": "abn-amro"}}))

test_retired_participant_denies if {
	register := json.patch(data.register, [{"op": "replace", "path": "/partnerships/riec-amsterdam-amstelland/participants/1/status", "value": "retired"}])
	d := exchange.decision with input as _with({}) with data.register as register
	"holder-retired" in _codes(d)
}

test_requester_role_not_allowed_denies_s8 if {
	d := _decide({"requester": {"organisation": "politie", "system": "politie-bvh"}, "holder": {"organisation": "kvk"}, "categories": ["company_registration"]})
	"requester-role-not-allowed" in _codes(d)
}

# Rule 2: legal basis, signal, case reference.
test_wrong_legal_basis_denies_s12 if "legal-basis-mismatch" in _codes(_decide({"legal_basis": "WGS (RIEC)"}))

test_missing_signal_denies if "signal-missing" in _codes(_decide({"signal": {"type": "", "reference": "B-1"}}))

test_missing_case_reference_denies if "case-reference-missing" in _codes(_decide({"case_reference": " "}))

# Rule 3: narrowing, with a reason per category; nothing left denies.
test_tax_is_narrowed_income_removed_s1 if {
	d := _decide({"holder": {"organisation": "belastingdienst"}, "categories": ["tax_debts", "income", "company_registration"]})
	d.outcome == "allowed-narrowed"
	d.permitted_categories == ["tax_debts"]
	d.removed_categories == ["income"]
	some r in d.reasons
	r.code == "category-not-supplied"
	r.category == "income"
}

test_category_not_receivable_is_removed if {
	d := _decide({"partnership": "riec-amsterdam-amstelland", "purpose": "unexplained-wealth", "legal_basis": "WGS (RIEC)", "holder": {"organisation": "belastingdienst"}, "categories": ["income", "assets"]})
	d.permitted_categories == ["assets"]
	some r in d.reasons
	r.code == "category-not-receivable"
	r.category == "income"
}

test_nothing_permitted_denies if "no-permitted-categories" in _codes(_decide({"categories": ["bank_accounts"], "holder": {"organisation": "belastingdienst"}}))

# Rule 4: never disclosed (S11).
test_criminal_intelligence_always_removed_s11 if {
	d := _decide({"categories": ["police_incidents", "criminal_intelligence"]})
	d.outcome == "allowed-narrowed"
	d.removed_categories == ["criminal_intelligence"]
	"never-disclosed" in _codes(d)
}

# Rule 5: minors.
test_minor_denied_for_bibob_s5 if "minors-not-allowed" in _codes(_decide({"subjects_minor": true}))

test_minor_allowed_for_youth_prevention_s4 if {
	d := _decide({"partnership": "zvh-amsterdam", "purpose": "youth-prevention", "legal_basis": "WGS (ZVH)", "subjects_minor": true})
	d.outcome == "allowed"
	d.obligations.results_only == true
}

# Rule 6: bulk and daily volume.
test_bulk_request_escalates_s7 if {
	d := _decide({"subject_count": 40})
	d.outcome == "escalated"
	not d.allow
	"bulk-request" in _codes(d)
}

test_25_subjects_is_not_bulk if {
	d := _decide({"subject_count": 25})
	d.outcome == "allowed"
}

test_daily_limit_escalates if {
	d := exchange.decision with input as object.union(_with({}), {"context": {"requests_today": 200}})
	"daily-limit" in _codes(d)
}

# Rule 6 needs both counts: an input without a non-negative integer subject count or daily count is denied
# (it would otherwise escape the bulk and daily-limit escalations).
_with_counts(subject_count, requests_today) := {
	"request": object.union(object.remove(_base.request, ["subject_count"]), subject_count),
	"context": object.union(object.remove(_base.context, ["requests_today"]), requests_today),
	"request_fingerprint": _base.request_fingerprint,
}

_incomplete(subject_count, requests_today) if {
	d := exchange.decision with input as _with_counts(subject_count, requests_today)
	d.outcome == "denied"
	not d.allow
	"input-incomplete" in _codes(d)
}

test_missing_subject_count_denies if _incomplete({}, {"requests_today": 0})

test_missing_requests_today_denies if _incomplete({"subject_count": 1}, {})

test_subject_count_as_a_string_denies if _incomplete({"subject_count": "40"}, {"requests_today": 0})

test_requests_today_as_a_string_denies if _incomplete({"subject_count": 1}, {"requests_today": "300"})

test_negative_subject_count_denies if _incomplete({"subject_count": -1}, {"requests_today": 0})

test_negative_requests_today_denies if _incomplete({"subject_count": 1}, {"requests_today": -5})

test_fractional_subject_count_denies if _incomplete({"subject_count": 2.5}, {"requests_today": 0})

test_fractional_requests_today_denies if _incomplete({"subject_count": 1}, {"requests_today": 199.5})

test_null_counts_deny_with_one_reason_naming_both if {
	d := exchange.decision with input as _with_counts({"subject_count": null}, {"requests_today": null})
	reasons := [r | some r in d.reasons; r.code == "input-incomplete"]
	count(reasons) == 1
	contains(reasons[0].message, "request.subject_count")
	contains(reasons[0].message, "context.requests_today")
}

test_zero_and_positive_integer_counts_are_complete if {
	every counts in [[0, 0], [1, 0], [0, 199], [25, 17]] {
		d := exchange.decision with input as _with_counts({"subject_count": counts[0]}, {"requests_today": counts[1]})
		d.outcome == "allowed"
		not "input-incomplete" in _codes(d)
	}
}

test_counts_that_escalate_are_not_incomplete if {
	d := exchange.decision with input as _with_counts({"subject_count": 40}, {"requests_today": 200})
	d.outcome == "escalated"
	not "input-incomplete" in _codes(d)
}

test_incomplete_input_denies_every_holder_of_a_batch if {
	i := object.union(object.remove(_with({}), ["request"]), {
		"request": object.remove(_base.request, ["holder", "subject_count"]),
		"holders": [{"organisation": "politie"}, {"organisation": "kvk"}],
	})
	ds := exchange.decisions with input as i
	count(ds) == 2
	every d in ds {
		d.outcome == "denied"
		"input-incomplete" in _codes(d)
	}
}

# Rules 1 and 7 judge the request's time: without a valid `requested_at` (absent, no string, no date and
# time both engines parse) the request is denied as input-incomplete. It once escalated as outside office
# hours under the interpreter and OPA, without checking the partnership's start date, and made no decision
# under the RVM.
_without_requested_at := object.union(object.remove(_base, ["request"]), {"request": object.remove(_base.request, ["requested_at"])})

test_missing_requested_at_denies_as_incomplete if {
	d := exchange.decision with input as _without_requested_at
	d.outcome == "denied"
	not d.allow
	_codes(d) == {"input-incomplete"}
	contains(d.reasons[0].message, "request.requested_at")
	d.obligations == null
}

test_unparsable_requested_at_denies_as_incomplete if {
	every at in [null, 5, "", "tomorrow", "2026-11-25", "2026-11-25 10:00:00Z", "2026-11-25t10:00:00z", "2026-02-29T10:00:00Z", "2026-04-31T10:00:00Z", "2026-11-25T24:00:00Z", "2026-11-25T10:00:60Z", "2026-11-25T10:00:00+24:00", "2026-11-25T10:00:00+23:60", "2026-11-25T10:60:00Z", "2026-11-25T10:00:00.1234567891Z", "0026-11-25T10:00:00Z", "1900-12-31T23:59:59Z", "2100-01-01T00:00:00Z"] {
		d := _decide({"requested_at": at})
		d.outcome == "denied"
		_codes(d) == {"input-incomplete"}
	}
}

test_valid_requested_at_forms_are_complete if {
	every at in ["2026-11-25T10:00:00Z", "2026-11-25T11:00:00+01:00", "2026-11-25T10:00:00.123456Z", "2028-02-29T10:00:00Z", "2000-02-29T10:00:00Z", "2026-12-31T10:00:00Z", "2026-11-25T10:00:00-23:59", "1901-01-01T00:00:00Z", "2099-12-31T23:59:59.999999999Z"] {
		d := _decide({"requested_at": at})
		not "input-incomplete" in _codes(d)
	}
}

# The start date is never skipped: a request of unknown time to a partnership not yet established is denied.
test_missing_requested_at_denies_before_the_partnership_is_established_too if {
	d := exchange.decision with input as _without_requested_at with data.register as _established("2026-12-01")
	d.outcome == "denied"
	"input-incomplete" in _codes(d)
}

test_missing_requested_at_denies_every_holder_of_a_batch if {
	i := object.union(object.remove(_base, ["request"]), {
		"request": object.remove(_base.request, ["holder", "requested_at"]),
		"holders": [{"organisation": "politie"}, {"organisation": "kvk"}],
	})
	ds := exchange.decisions with input as i
	count(ds) == 2
	every d in ds {
		d.outcome == "denied"
		"input-incomplete" in _codes(d)
	}
}

# Data handed to the holder must be a list of category names: anything else was read as none by the RVM
# (rules 3 and 4 on it skipped) while the interpreter failed. Absent, nothing is handed over.
test_provided_categories_that_are_no_list_of_names_deny_as_incomplete if {
	every provided in [null, "company_registration", {"company_registration": true}, 5, [5], ["company_registration", null]] {
		d := _decide({"provided_categories": provided})
		d.outcome == "denied"
		"input-incomplete" in _codes(d)
		some r in d.reasons
		contains(r.message, "request.provided_categories")
	}
}

test_absent_or_empty_provided_categories_are_complete if {
	_decide({"provided_categories": []}).outcome == "allowed"
	d := exchange.decision with input as object.union(object.remove(_base, ["request"]), {"request": object.remove(_base.request, ["provided_categories"])})
	d.outcome == "allowed"
}

test_one_incomplete_reason_names_every_field_at_fault if {
	i := object.union(object.remove(_base, ["request", "context"]), {
		"request": object.union(object.remove(_base.request, ["requested_at", "subject_count"]), {"provided_categories": "x"}),
		"context": {},
	})
	d := exchange.decision with input as i
	reasons := [r | some r in d.reasons; r.code == "input-incomplete"]
	count(reasons) == 1
	every field in ["request.requested_at", "request.subject_count", "context.requests_today", "request.provided_categories"] {
		contains(reasons[0].message, field)
	}
}

# Rule 7: office hours, Europe/Amsterdam, DST-aware.
test_saturday_escalates if "outside-office-hours" in _codes(_decide({"requested_at": "2026-11-28T10:00:00Z"}))

test_0659_local_escalates_0700_allowed if {
	"outside-office-hours" in _codes(_decide({"requested_at": "2026-11-25T05:59:00Z"}))
	d := _decide({"requested_at": "2026-11-25T06:00:00Z"})
	d.outcome == "allowed"
}

test_1859_allowed_1900_escalates if {
	d := _decide({"requested_at": "2026-11-25T17:59:00Z"})
	d.outcome == "allowed"
	"outside-office-hours" in _codes(_decide({"requested_at": "2026-11-25T18:00:00Z"}))
}

test_summer_time_is_respected if {
	d := _decide({"requested_at": "2026-03-30T05:00:00Z"}) # 07:00 CEST
	d.outcome == "allowed"
	"outside-office-hours" in _codes(_decide({"requested_at": "2026-03-27T05:30:00Z"})) # 06:30 CET
}

test_urgent_purpose_is_not_escalated_at_night if {
	register := json.patch(data.register, [{"op": "add", "path": "/partnerships/riec-amsterdam-amstelland/purposes/bibob-integrity-check/urgent", "value": true}])
	d := exchange.decision with input as _with({"requested_at": "2026-11-25T23:00:00Z"}) with data.register as register
	d.outcome == "allowed"
}

# Rule 8: an escalation decision for exactly this request.
_decision_for(fingerprint, holder, valid_until, categories) := object.union(_with({"subject_count": 40, "categories": ["tax_debts", "tax_compliance"], "holder": {"organisation": "belastingdienst"}}), {"context": {"requests_today": 0, "escalation_decision": {
	"id": "dec-1", "request_fingerprint": fingerprint, "holder": holder, "valid_until": valid_until,
	"permitted_categories": categories, "obligations": {"note": "tier-2"},
}}})

test_valid_decision_overrides_bulk_and_narrows if {
	d := exchange.decision with input as _decision_for("fp-1", "belastingdienst", "2026-12-01T00:00:00Z", ["tax_debts"])
	d.outcome == "allowed-narrowed"
	d.permitted_categories == ["tax_debts"]
	d.escalation_decision == "dec-1"
	"narrowed-by-escalation-decision" in _codes(d)

	# Only rule 9's obligations leave the policy (an unknown one of the decision's is not passed on).
	d.obligations == {"retain_until": "2028-11-25", "onward_sharing": false, "results_only": false}
}

test_expired_decision_is_ignored if {
	d := exchange.decision with input as _decision_for("fp-1", "belastingdienst", "2026-11-01T00:00:00Z", ["tax_debts"])
	d.outcome == "escalated"
}

test_decision_for_another_request_or_holder_is_ignored if {
	other := exchange.decision with input as _decision_for("other", "belastingdienst", "2026-12-01T00:00:00Z", ["tax_debts"])
	other.outcome == "escalated"
	holder := exchange.decision with input as _decision_for("fp-1", "kvk", "2026-12-01T00:00:00Z", ["tax_debts"])
	holder.outcome == "escalated"
}

test_decision_never_widens_beyond_the_register if {
	d := exchange.decision with input as _decision_for("fp-1", "belastingdienst", "2026-12-01T00:00:00Z", ["tax_debts", "tax_compliance", "income", "criminal_intelligence"])
	d.permitted_categories == ["tax_compliance", "tax_debts"]
}

# Rule 8: a decision that names no id or states its categories as no list is no valid decision: it neither
# overrides rules 6 and 7 nor narrows (else a category it leaves out would be removed without a reason and the
# decision would name no escalation decision it applied).
_decision_changed(changes) := object.union(_decision_for("fp-1", "belastingdienst", "2026-12-01T00:00:00Z", ["tax_debts"]), {"context": {"escalation_decision": changes}})

test_decision_without_an_id_is_no_valid_decision if {
	every changes in [{"id": null}, {"id": ""}, {"id": 7}] {
		d := exchange.decision with input as _decision_changed(changes)
		d.outcome == "escalated"
		d.escalation_decision == null
		"bulk-request" in _codes(d)
	}
	i := _decision_for("fp-1", "belastingdienst", "2026-12-01T00:00:00Z", ["tax_debts"])
	without_id := object.union(object.remove(i, ["context"]), {"context": {"requests_today": 0, "escalation_decision": object.remove(i.context.escalation_decision, ["id"])}})
	d := exchange.decision with input as without_id
	d.outcome == "escalated"
	d.escalation_decision == null
}

test_decision_whose_categories_are_no_list_is_no_valid_decision if {
	every changes in [{"permitted_categories": "tax_debts"}, {"permitted_categories": null}, {"permitted_categories": {"tax_debts": true}}] {
		d := exchange.decision with input as _decision_changed(changes)
		d.outcome == "escalated"
		d.escalation_decision == null
	}
}

# Rules 8 and 9: an escalation decision's obligations only tighten the purpose's: the earlier retain_until,
# results_only if either says so, onward sharing never.
_youth := {"partnership": "zvh-amsterdam", "purpose": "youth-prevention", "legal_basis": "WGS (ZVH)", "subjects_minor": true}

_decided(changes, obligations) := d if {
	d := exchange.decision with input as object.union(_with(object.union({"subject_count": 40}, changes)), {"context": {"requests_today": 0, "escalation_decision": {
		"id": "dec-9", "request_fingerprint": "fp-1", "holder": "politie", "valid_until": "2026-12-01T00:00:00Z",
		"permitted_categories": ["police_incidents"], "obligations": obligations,
	}}})
}

test_decision_cannot_retain_longer_than_the_purpose if {
	d := _decided({}, {"retain_until": "2099-12-31"})
	d.outcome == "allowed"
	d.escalation_decision == "dec-9"
	d.obligations == {"retain_until": "2028-11-25", "onward_sharing": false, "results_only": false}
}

test_decision_may_retain_shorter_than_the_purpose if {
	d := _decided({}, {"retain_until": "2027-01-31"})
	d.obligations == {"retain_until": "2027-01-31", "onward_sharing": false, "results_only": false}
}

test_decision_cannot_lift_results_only if {
	d := _decided(_youth, {"results_only": false, "retain_until": "2099-12-31"})
	d.outcome == "allowed"
	d.obligations == {"retain_until": "2027-11-25", "onward_sharing": false, "results_only": true}
}

test_decision_may_add_results_only if {
	d := _decided({}, {"results_only": true})
	d.obligations == {"retain_until": "2028-11-25", "onward_sharing": false, "results_only": true}
}

test_decision_without_obligations_keeps_the_purposes if {
	d := _decided(_youth, {})
	d.obligations == {"retain_until": "2027-11-25", "onward_sharing": false, "results_only": true}
}

test_decision_allowing_onward_sharing_is_no_valid_decision if {
	d := _decided({}, {"onward_sharing": true})
	d.outcome == "escalated"
	d.escalation_decision == null
	d.obligations == null
}

test_decision_with_malformed_obligations_is_no_valid_decision if {
	every obligations in [{"retain_until": "31-12-2026"}, {"retain_until": 20261231}, {"results_only": "no"}, "none"] {
		d := _decided({}, obligations)
		d.outcome == "escalated"
		d.escalation_decision == null
	}
}

# Rule 9: obligations on every allow; hit/no-hit holders.
test_obligations_on_allow if {
	d := _decide({})
	d.obligations == {"retain_until": "2028-11-25", "onward_sharing": false, "results_only": false}
}

test_no_obligations_on_deny if {
	d := _decide({"legal_basis": "x"})
	d.obligations == null
}

test_investigation_is_hit_only_for_bibob_s1 if {
	d := _decide({"holder": {"organisation": "fiod"}, "categories": ["company_registration"]})
	d.hit_only
	d.permitted_categories == ["ongoing_investigation"]
}

test_bank_gets_hit_no_hit_only_s10 if {
	d := _decide({"partnership": "fec", "purpose": "taskforce-subject-check", "legal_basis": "WGS (FEC) with covenant", "requester": {"organisation": "abn-amro", "system": "abn-amro-fec"}, "holder": {"organisation": "fiod"}, "categories": ["ongoing_investigation"]})
	d.outcome == "allowed"
	d.hit_only
}

# Rule 3 with the vocabulary: a hit-only category ("never as records") is removed from a holder whose role
# is no hit/no-hit holder for the purpose (a register the loader refuses; the policy holds regardless).
_police_supplies_investigation := json.patch(data.register, [{"op": "add", "path": "/partnerships/riec-amsterdam-amstelland/purposes/bibob-integrity-check/supplies/police/-", "value": "ongoing_investigation"}])

test_hit_only_category_is_removed_from_a_holder_answering_records if {
	d := exchange.decision with input as _with({"categories": ["police_incidents", "ongoing_investigation"]}) with data.register as _police_supplies_investigation
	d.outcome == "allowed-narrowed"
	d.permitted_categories == ["police_incidents"]
	d.removed_categories == ["ongoing_investigation"]
	not d.hit_only
	some r in d.reasons
	r.code == "hit-only-category"
	r.category == "ongoing_investigation"
}

test_only_a_hit_only_category_from_a_holder_answering_records_denies if {
	d := exchange.decision with input as _with({"categories": ["ongoing_investigation"]}) with data.register as _police_supplies_investigation
	d.outcome == "denied"
	d.permitted_categories == []
	_codes(d) == {"no-permitted-categories", "hit-only-category"}
}

test_hit_only_category_is_removed_under_an_escalation_decision_too if {
	i := object.union(_with({"subject_count": 40, "categories": ["police_incidents", "ongoing_investigation"]}), {"context": {"requests_today": 0, "escalation_decision": {
		"id": "dec-1", "request_fingerprint": "fp-1", "holder": "politie", "valid_until": "2026-12-01T00:00:00Z",
		"permitted_categories": ["police_incidents", "ongoing_investigation"],
	}}})
	d := exchange.decision with input as i with data.register as _police_supplies_investigation
	d.outcome == "allowed-narrowed"
	d.permitted_categories == ["police_incidents"]
	_codes(d) == {"hit-only-category"}
}

test_hit_only_holder_still_answers_hit_no_hit if {
	d := exchange.decision with input as _with({"holder": {"organisation": "fiod"}, "categories": ["ongoing_investigation"]}) with data.register as _police_supplies_investigation
	d.outcome == "allowed"
	d.hit_only
	d.permitted_categories == ["ongoing_investigation"]
}

# REGISTER.md (FEC): "A bank never receives police, tax or prosecution data — only hit/no-hit." A private
# participant's role gets nothing as records from a police, tax or prosecution holder, whatever the register
# data says (the loader refuses such a register; the policy holds regardless).
_taskforce_check := "/partnerships/fec/purposes/taskforce-subject-check"

_bank_check := {"partnership": "fec", "purpose": "taskforce-subject-check", "legal_basis": "WGS (FEC) with covenant", "requester": {"organisation": "abn-amro", "system": "abn-amro-fec"}, "holder": {"organisation": "politie"}, "categories": ["police_incidents"]}

_police_records_to_banks := json.patch(data.register, [
	{"op": "replace", "path": concat("", [_taskforce_check, "/supplies/police"]), "value": ["police_incidents"]},
	{"op": "replace", "path": concat("", [_taskforce_check, "/receives/bank"]), "value": ["ongoing_investigation", "police_incidents"]},
	{"op": "replace", "path": concat("", [_taskforce_check, "/hit_only_holders"]), "value": ["investigation"]},
])

test_private_participant_gets_no_police_records if {
	d := exchange.decision with input as _with(_bank_check) with data.register as _police_records_to_banks
	d.outcome == "denied"
	d.permitted_categories == []
	d.removed_categories == ["police_incidents"]
	_codes(d) == {"no-permitted-categories", "private-participant-hit-only"}
	some r in d.reasons
	r.code == "private-participant-hit-only"
	r.category == "police_incidents"
}

test_private_participant_still_gets_hit_no_hit_beside_a_barred_holder if {
	batch := object.union(object.remove(_base, ["request"]), {
		"request": object.remove(_with(object.union(_bank_check, {"categories": ["ongoing_investigation", "police_incidents"]})).request, ["holder"]),
		"holders": [{"organisation": "fiod"}, {"organisation": "politie"}],
	})
	[fiod, police] := exchange.decisions with input as batch with data.register as _police_records_to_banks
	[fiod.outcome, fiod.hit_only, fiod.permitted_categories] == ["allowed", true, ["ongoing_investigation"]]
	[police.outcome, police.permitted_categories] == ["denied", []]
	"private-participant-hit-only" in _codes(police)
}

test_escalation_decision_cannot_give_a_private_participant_police_records if {
	i := object.union(_with(object.union(_bank_check, {"subject_count": 40})), {"context": {"requests_today": 0, "escalation_decision": {
		"id": "dec-1", "request_fingerprint": "fp-1", "holder": "politie", "valid_until": "2026-12-01T00:00:00Z",
		"permitted_categories": ["police_incidents"],
	}}})
	d := exchange.decision with input as i with data.register as _police_records_to_banks
	d.outcome == "denied"
	d.permitted_categories == []
	"private-participant-hit-only" in _codes(d)
}

test_private_participant_gets_a_hit_only_holders_answer if {
	register := json.patch(data.register, [
		{"op": "replace", "path": concat("", [_taskforce_check, "/supplies/police"]), "value": ["ongoing_investigation", "police_incidents"]},
		{"op": "replace", "path": concat("", [_taskforce_check, "/receives/bank"]), "value": ["ongoing_investigation", "police_incidents"]},
	])
	d := exchange.decision with input as _with(_bank_check) with data.register as register
	d.outcome == "allowed"
	d.hit_only
	d.permitted_categories == ["ongoing_investigation", "police_incidents"]
}

test_public_participant_in_the_role_gets_the_records if {
	register := json.patch(_police_records_to_banks, [
		{"op": "replace", "path": "/organisations/abn-amro/sector", "value": "public"},
		{"op": "replace", "path": "/organisations/rabobank/sector", "value": "public"},
	])
	d := exchange.decision with input as _with(_bank_check) with data.register as register
	d.outcome == "allowed"
	not d.hit_only
	d.permitted_categories == ["police_incidents"]
}

test_the_barred_holder_roles_are_police_tax_and_prosecution if {
	data.wgs.index.public_only_holder_roles == {"police", "tax", "prosecution"}
	every role in ["police", "tax", "prosecution"] {
		data.wgs.index.covenant_barred({"bank"}, "bank", role, false)
	}
	not data.wgs.index.covenant_barred({"bank"}, "bank", "registry", false)
	not data.wgs.index.covenant_barred({"bank"}, "bank", "tax", true)
	not data.wgs.index.covenant_barred({"bank"}, "municipality", "tax", false)
}

test_every_decision_carries_the_policy_version if {
	d := _decide({})
	d.policy_version == data.wgs.version.policy_version
}

# A batch input of `_with(changes)` for two holders.
_batch(changes) := object.union(object.remove(_with(changes), ["request"]), {
	"request": object.remove(object.union(_base.request, changes), ["holder"]),
	"holders": [{"organisation": "politie"}, {"organisation": "kvk"}],
})

# Every decision names the register it was made under by the digest of the register it read
# (`data.register.sha256`, which the gateway adds to the register it loads), in both entry points and for
# every kind of request (the plain one, and one with reasons of its own): the gateway refuses one made under
# another register than its own (an OPA server may hold another gateway's), also of the same version string.
test_every_decision_carries_the_register_digest_it_read if {
	digested := object.union(data.register, {"sha256": "another-digest"})
	every changes in [{}, {"legal_basis": "none"}] {
		d := exchange.decision with input as _with(changes) with data.register as digested
		d.register_sha256 == "another-digest"
		ds := exchange.decisions with input as _batch(changes) with data.register as digested
		[b.register_sha256 | some b in ds] == ["another-digest", "another-digest"]
	}
}

# Every decision names the holder it is for, in both entry points and for both kinds of request: the
# gateway matches a batch to its holders by position and refuses a decision naming another holder.
test_every_decision_names_its_holder if {
	every changes in [{}, {"legal_basis": "none"}] {
		_decide(changes).holder == _base.request.holder.organisation
		ds := exchange.decisions with input as _batch(changes)
		[b.holder | some b in ds] == ["politie", "kvk"]
	}
}

# --- Review (policy-review): edge cases of rules 1, 5, 6, 7 and 9 ----------------------------------------

_urgent(partnership, purpose) := json.patch(data.register, [{"op": "add", "path": sprintf("/partnerships/%s/purposes/%s/urgent", [partnership, purpose]), "value": true}])

_fec_check := {"partnership": "fec", "purpose": "taskforce-subject-check", "legal_basis": "WGS (FEC) with covenant", "requester": {"organisation": "abn-amro", "system": "abn-amro-fec"}, "holder": {"organisation": "fiod"}, "categories": ["ongoing_investigation"]}

# Rule 9: the retention never runs past the purpose's period. 31 August + 6 months is 28 February (OPA's
# time.add_date, Go's AddDate, would give 3 March; regorus's clamps: the policy does the arithmetic itself).
test_retention_ends_on_the_last_day_of_a_shorter_month if {
	d := _decide(object.union(_fec_check, {"requested_at": "2026-08-31T10:00:00Z"}))
	d.outcome == "allowed"
	d.obligations.retain_until == "2027-02-28"
	leap := _decide(object.union(_youth, {"requested_at": "2028-02-29T10:00:00Z"}))
	leap.obligations.retain_until == "2029-02-28"
	into_a_leap_year := _decide(object.union(_fec_check, {"requested_at": "2027-08-31T10:00:00Z"}))
	into_a_leap_year.obligations.retain_until == "2028-02-29"
}

# Rule 9: retention counts from the request's date in Amsterdam (the register's time zone), as the daily
# count and the escalation deadlines do: 00:30 on 1 September there is 22:30 UTC on 31 August.
test_retention_counts_from_the_date_in_amsterdam if {
	d := exchange.decision with input as _with(object.union(_fec_check, {"requested_at": "2026-08-31T22:30:00Z"})) with data.register as _urgent("fec", "taskforce-subject-check")
	d.outcome == "allowed"
	d.obligations.retain_until == "2027-03-01"
	winter := exchange.decision with input as _with({"requested_at": "2026-11-24T23:30:00Z"}) with data.register as _urgent("riec-amsterdam-amstelland", "bibob-integrity-check")
	winter.obligations.retain_until == "2028-11-25"
	same_day := exchange.decision with input as _with({"requested_at": "2026-11-25T22:59:00Z"}) with data.register as _urgent("riec-amsterdam-amstelland", "bibob-integrity-check")
	same_day.obligations.retain_until == "2028-11-25"
}

# Rule 1: a partnership shares nothing before the date it is established (in Amsterdam), though the register
# lists it as active already.
_established(day) := json.patch(data.register, [
	{"op": "replace", "path": "/partnerships/riec-amsterdam-amstelland/established", "value": day},
	{"op": "add", "path": "/partnerships/riec-amsterdam-amstelland/purposes/bibob-integrity-check/urgent", "value": true},
])

test_partnership_not_yet_established_denies if {
	d := exchange.decision with input as _with({"requested_at": "2026-11-30T22:59:00Z"}) with data.register as _established("2026-12-01")
	d.outcome == "denied"
	_codes(d) == {"partnership-not-established"}
	d.obligations == null
	on_the_day := exchange.decision with input as _with({"requested_at": "2026-11-30T23:00:00Z"}) with data.register as _established("2026-12-01")
	on_the_day.outcome == "allowed"
}

# Rule 5 fails closed: a request that does not say whether a subject is a minor is treated as about one.
test_request_without_the_minor_flag_counts_as_about_a_minor if {
	d := exchange.decision with input as json.remove(_base, ["request/subjects_minor"])
	d.outcome == "denied"
	_codes(d) == {"minors-not-allowed"}
	youth := exchange.decision with input as json.remove(_with(_youth), ["request/subjects_minor"])
	youth.outcome == "allowed"
}

# Rule 6 at its bounds: 26 subjects is bulk; 199 requests today (this is the 200th) is not over the limit.
test_26_subjects_is_bulk if {
	d := _decide({"subject_count": 26})
	d.outcome == "escalated"
	_codes(d) == {"bulk-request"}
}

test_the_200th_request_of_the_day_is_not_escalated if {
	d := exchange.decision with input as object.union(_with({}), {"context": {"requests_today": 199}})
	d.outcome == "allowed"
}

# Rule 7 across the autumn change to winter time (25 October 2026) and at 19:00 in summer.
test_office_hours_across_the_autumn_clock_change if {
	_decide({"requested_at": "2026-10-23T05:00:00Z"}).outcome == "allowed" # Friday 07:00 CEST
	"outside-office-hours" in _codes(_decide({"requested_at": "2026-10-23T04:59:59Z"})) # Friday 06:59:59 CEST
	"outside-office-hours" in _codes(_decide({"requested_at": "2026-10-23T17:00:00Z"})) # Friday 19:00 CEST
	_decide({"requested_at": "2026-10-23T16:59:59Z"}).outcome == "allowed" # Friday 18:59:59 CEST
	"outside-office-hours" in _codes(_decide({"requested_at": "2026-10-26T05:59:00Z"})) # Monday 06:59 CET
	_decide({"requested_at": "2026-10-26T06:00:00Z"}).outcome == "allowed" # Monday 07:00 CET
}

# Rule 7's reason states the register's office hours, not a fixed text.
test_office_hours_reason_states_the_registers_hours if {
	register := json.patch(data.register, [{"op": "replace", "path": "/office_hours/end", "value": "17:00"}])
	d := exchange.decision with input as _with({"requested_at": "2026-11-25T16:30:00Z"}) with data.register as register
	d.outcome == "escalated"
	some r in d.reasons
	r.code == "outside-office-hours"
	contains(r.message, "07:00-17:00 Europe/Amsterdam")
	odd_days := json.patch(data.register, [{"op": "replace", "path": "/office_hours/weekdays", "value": [3, 1]}])
	tuesday := exchange.decision with input as _with({"requested_at": "2026-11-24T10:00:00Z"}) with data.register as odd_days
	some t in tuesday.reasons
	t.message == "requests outside office hours (Mon, Wed 07:00-19:00 Europe/Amsterdam) are escalated"
	default_hours := _decide({"requested_at": "2026-11-28T10:00:00Z"})
	some s in default_hours.reasons
	s.message == "requests outside office hours (Mon-Fri 07:00-19:00 Europe/Amsterdam) are escalated"
}

# --- Review (policy-review, second pass): inputs another caller of the policies may send ------------------

# Rule 2 fails closed: a request that names no legal basis is denied. It was allowed (`!=` with an absent
# value is undefined, so the mismatch reason never held), for a hit/no-hit holder too, in a batch too.
test_request_without_a_legal_basis_denies if {
	every holder in ["politie", "fiod"] {
		d := exchange.decision with input as json.remove(_with({"holder": {"organisation": holder}}), ["request/legal_basis"])
		d.outcome == "denied"
		_codes(d) == {"legal-basis-mismatch"}
		d.obligations == null
	}
	batch := object.union(object.remove(_base, ["request"]), {
		"request": object.remove(_base.request, ["holder", "legal_basis"]),
		"holders": [{"organisation": "politie"}, {"organisation": "fiod"}],
	})
	[d.outcome | some d in exchange.decisions] == ["denied", "denied"] with input as batch
}

# The categories asked must be a non-empty list of category names (as the API requires). Absent or malformed,
# regorus's interpreter failed and the RVM read them as none: a hit/no-hit holder, asked about all it
# supplies whatever is requested, was allowed, on a request that asked for nothing.
test_categories_that_are_no_list_of_names_deny_as_incomplete if {
	every categories in [null, "police_incidents", {"police_incidents": true}, 5, [5], ["police_incidents", null], []] {
		every holder in ["politie", "fiod"] {
			d := _decide({"categories": categories, "holder": {"organisation": holder}})
			d.outcome == "denied"
			some r in d.reasons
			r.code == "input-incomplete"
			contains(r.message, "request.categories")
		}
	}
	absent := exchange.decision with input as json.remove(_with({"holder": {"organisation": "fiod"}}), ["request/categories"])
	absent.outcome == "denied"
	"input-incomplete" in _codes(absent)
}

# Rule 1's reason for a requester that is no participant does not depend on the requester naming both its
# organisation and its system: without either, the denial once had no such reason (its message could not
# be formatted), and in discovery under the RVM no reason at all (a denial the gateway refuses).
test_requester_without_organisation_or_system_is_no_participant if {
	every requester in [{"organisation": "gemeente-amsterdam"}, {"system": "gemeente-amsterdam-vth"}, {}, "gemeente-amsterdam"] {
		d := exchange.decision with input as json.patch(_base, [{"op": "replace", "path": "/request/requester", "value": requester}])
		d.outcome == "denied"
		"requester-not-participant" in _codes(d)
	}
	missing := exchange.decision with input as json.remove(_base, ["request/requester"])
	"requester-not-participant" in _codes(missing)
}
