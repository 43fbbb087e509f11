# WGS exchange decision per target holder (REGISTER.md rules 1-9).
# Input: see policies/README.md. Data: data.register (the partnership register as JSON).
# Deny beats escalate beats allow; narrowing removes categories and says why per category.
#
# Two entry points, one set of rules:
#   decision  - one target: {"request": {..., "holder": {...}}, "context": ..., "request_fingerprint": ...}
#   decisions - every target of one request at once: the same input without `request.holder` and with
#               "holders": [{"organisation": ..., "system": ...}, ...]; a list with, for each holder in
#               order, exactly the `decision` that holder would get.
# What does not depend on the holder is a rule (evaluated once per evaluation, so once per batch); the
# per-holder part is `_decision(holder)`, which binds each value once in a local variable and takes the
# register-only facts about the holder from wgs.common.holder_facts.
package wgs.exchange

import rego.v1

import data.wgs.common.hit_only_categories
import data.wgs.common.holder_facts
import data.wgs.common.in_office_hours
import data.wgs.common.purpose
import data.wgs.common.request_deny
import data.wgs.common.requested
import data.wgs.common.requested_ns
import data.wgs.common.requester
import data.wgs.common.retain_until

decision := _decision(input.request.holder)

decisions := [_decision(h) | some h in input.holders]

# --- independent of the holder -------------------------------------------------------------------------

# Data the requester hands to the holder (e.g. dissolution grounds to the KvK, S2) is bound the same way:
# the requester's role supplies it for this purpose and the holder's role may receive it (rules 3 and 4).
provided := {c | some c in object.get(input.request, "provided_categories", [])}

# Rule 6: bulk and daily volume; rule 7: office hours. A valid escalation decision overrides all three
# (rule 8, see `_escalate`).
request_escalate contains {"code": "bulk-request", "message": sprintf("%d subjects exceeds the threshold of %d for `%s`", [input.request.subject_count, purpose.bulk_threshold, input.request.purpose])} if {
	input.request.subject_count > purpose.bulk_threshold
}

request_escalate contains {"code": "daily-limit", "message": sprintf("this system made %d requests today for `%s` (limit %d)", [input.context.requests_today, input.request.purpose, purpose.daily_limit_per_system])} if {
	input.context.requests_today >= purpose.daily_limit_per_system
}

request_escalate contains {"code": "outside-office-hours", "message": "requests outside office hours (Mon-Fri 07:00-19:00 Europe/Amsterdam) are escalated"} if {
	purpose
	not in_office_hours
	not purpose.urgent
}

# Rule 8: an escalation decision for exactly this request (the holder is checked per holder).
_escalation_decision_for_request := d if {
	d := input.context.escalation_decision
	d.request_fingerprint == input.request_fingerprint
}

# Rule 9: obligations on every allow (an escalation decision may add its own).
_obligations_on_allow := {"retain_until": retain_until, "onward_sharing": false, "results_only": object.get(purpose, "results_only", false)}

# --- per holder ----------------------------------------------------------------------------------------

_decision(h) := d if {
	org := h.organisation
	f := holder_facts(org)
	req := requested

	# A hit/no-hit holder (rule 3, e.g. FIOD for Bibob) is always asked about its hit categories when
	# targeted; any other holder about what was requested.
	lawful := _lawful(f.hit_only_holder, f.base, req)

	# Rule 8: never wider than rules 3/4 allow, and never wider than the decision states.
	ed := _escalation_decision(org)
	permitted := _permitted(ed, lawful)

	# Outside the holder's domain a requested category is not this holder's business (no narrowing).
	removed := (req & f.domain_nd) - permitted
	common_deny := request_deny | {r | some r in f.deny}
	deny := (common_deny | _provision_deny(org, f)) | _nothing_permitted(common_deny, permitted)
	escalate := _escalate(ed)
	outcome := _outcome(deny, escalate, removed)
	allowed := outcome in {"allowed", "allowed-narrowed"}

	d := {
		"allow": allowed,
		"escalate": outcome == "escalated",
		"outcome": outcome,
		"reasons": array.concat(array.concat(sort_reasons(deny), sort_reasons(escalate)), sort_reasons(_removal_reasons(removed, f, lawful, ed))),
		"permitted_categories": sort([c | some c in permitted; allowed]),
		"removed_categories": sort([c | some c in removed]),
		"hit_only": _hit_only(f.hit_only_holder, permitted),
		"obligations": _obligations(allowed, ed),
		"escalation_decision": _decision_id(ed),
		"policy_version": data.wgs.version.policy_version,
	}
}

_lawful(true, base, _) := base

_lawful(false, base, asked) := asked & base

_escalation_decision(org) := d if {
	d := _escalation_decision_for_request
	d.holder == org
	time.parse_rfc3339_ns(d.valid_until) > requested_ns
} else := null

_permitted(null, lawful) := lawful

_permitted(ed, lawful) := lawful & {c | some c in ed.permitted_categories} if ed != null

# Rules 3 and 4: a reason per removed category (the register's reason, or the escalation decision's).
_removal_reasons(removed, f, _, null) := {f.reasons[c] | some c in removed}

_removal_reasons(removed, f, lawful, ed) := {f.reasons[c] | some c in removed} | {{"code": "narrowed-by-escalation-decision", "category": c, "message": sprintf("escalation decision `%s` does not include `%s`", [ed.id, c])} |
	some c in removed
	c in lawful
} if ed != null

_provision_deny(org, f) := {{"code": "provision-not-allowed", "category": c, "message": sprintf("role `%s` may not hand `%s` to `%s` for `%s`", [requester.role, c, org, input.request.purpose])} |
	some c in provided
	not c in f.providable
}

_nothing_permitted(common_deny, permitted) := {{"code": "no-permitted-categories", "message": "none of the requested categories may be disclosed by this holder for this purpose"} |
	count(common_deny) == 0
	count(permitted) == 0
}

_escalate(null) := request_escalate

_escalate(ed) := set() if ed != null

_outcome(deny, escalate, removed) := "denied" if {
	count(deny) > 0
} else := "escalated" if {
	count(escalate) > 0
} else := "allowed-narrowed" if {
	count(removed) > 0
} else := "allowed"

_hit_only(true, _) := true

_hit_only(false, permitted) := true if {
	count(permitted) > 0
	count(permitted - hit_only_categories) == 0
} else := false

_obligations(true, null) := _obligations_on_allow

_obligations(true, ed) := object.union(_obligations_on_allow, ed.obligations) if ed != null

_obligations(false, _) := null

_decision_id(null) := null

_decision_id(ed) := object.get(ed, "id", null) if ed != null

sort_reasons(reasons) := [r | some key in sort([k | some x in reasons; k := concat(":", [x.code, object.get(x, "category", "")])]); some r in reasons; concat(":", [r.code, object.get(r, "category", "")]) == key]
