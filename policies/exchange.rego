# WGS exchange decision for ONE target holder (REGISTER.md rules 1-9).
# Input: see policies/README.md. Data: data.register (the partnership register as JSON).
# Deny beats escalate beats allow; narrowing removes categories and says why per category.
package wgs.exchange

import rego.v1

import data.wgs.common

purpose := common.purpose

supplied := {c | some c in purpose.supplies[common.holder.role]}

receivable := {c | some c in purpose.receives[common.requester.role]}

# What this holder could ever supply in this partnership: a requested category outside it is simply not
# this holder's business (no narrowing); one inside it but not permitted for this purpose is narrowed.
holder_domain := {c | some p in common.partnership.purposes; some c in p.supplies[common.holder.role]}

# A hit/no-hit holder (rule 3, e.g. FIOD for Bibob) is always asked about its hit categories when targeted.
considered := supplied & receivable if common.holder.role in purpose.hit_only_holders

considered := common.requested if not common.holder.role in purpose.hit_only_holders

lawful := ((considered & supplied) & receivable) - common.never_disclosed

# Rule 8: a valid escalation decision for exactly this request (and this holder).
escalation_decision := d if {
	d := input.context.escalation_decision
	d.request_fingerprint == input.request_fingerprint
	d.holder == input.request.holder.organisation
	time.parse_rfc3339_ns(d.valid_until) > time.parse_rfc3339_ns(input.request.requested_at)
}

decided := {c | some c in escalation_decision.permitted_categories}

# Never wider than rule 3/4 allow, and never wider than the decision states.
permitted := lawful & decided if escalation_decision

permitted := lawful if not escalation_decision

removed := (common.requested & (holder_domain | common.never_disclosed)) - permitted

# Rule 3 and 4: a reason per removed category.
removal_reasons contains {"code": "never-disclosed", "category": c, "message": sprintf("`%s` is never disclosed through the gateway", [c])} if {
	some c in removed
	c in common.never_disclosed
}

removal_reasons contains {"code": "category-not-supplied", "category": c, "message": sprintf("`%s` does not supply `%s` for `%s`", [input.request.holder.organisation, c, input.request.purpose])} if {
	some c in removed
	not c in common.never_disclosed
	not c in supplied
}

removal_reasons contains {"code": "category-not-receivable", "category": c, "message": sprintf("role `%s` may not receive `%s` for `%s`", [common.requester.role, c, input.request.purpose])} if {
	some c in removed
	not c in common.never_disclosed
	c in supplied
	not c in receivable
}

removal_reasons contains {"code": "narrowed-by-escalation-decision", "category": c, "message": sprintf("escalation decision `%s` does not include `%s`", [escalation_decision.id, c])} if {
	some c in removed
	c in lawful
	escalation_decision
}

deny contains r if {
	some r in common.deny
}

# Data the requester hands to the holder (e.g. dissolution grounds to the KvK, S2) is bound the same way:
# the requester's role supplies it for this purpose and the holder's role may receive it (rules 3 and 4).
provided := {c | some c in object.get(input.request, "provided_categories", [])}

deny contains {"code": "provision-not-allowed", "category": c, "message": sprintf("role `%s` may not hand `%s` to `%s` for `%s`", [common.requester.role, c, input.request.holder.organisation, input.request.purpose])} if {
	some c in provided
	not _may_provide(c)
}

_may_provide(c) if {
	c in purpose.supplies[common.requester.role]
	c in purpose.receives[common.holder.role]
	not c in common.never_disclosed
}

deny contains {"code": "no-permitted-categories", "message": "none of the requested categories may be disclosed by this holder for this purpose"} if {
	count(common.deny) == 0
	count(permitted) == 0
}

# Rule 6: bulk and daily volume; rule 7: office hours. A valid decision overrides both (rule 8).
escalate contains {"code": "bulk-request", "message": sprintf("%d subjects exceeds the threshold of %d for `%s`", [input.request.subject_count, purpose.bulk_threshold, input.request.purpose])} if {
	input.request.subject_count > purpose.bulk_threshold
	not escalation_decision
}

escalate contains {"code": "daily-limit", "message": sprintf("this system made %d requests today for `%s` (limit %d)", [input.context.requests_today, input.request.purpose, purpose.daily_limit_per_system])} if {
	input.context.requests_today >= purpose.daily_limit_per_system
	not escalation_decision
}

escalate contains {"code": "outside-office-hours", "message": "requests outside office hours (Mon-Fri 07:00-19:00 Europe/Amsterdam) are escalated"} if {
	purpose
	not common.in_office_hours
	not purpose.urgent
	not escalation_decision
}

hit_only if common.holder.role in purpose.hit_only_holders

hit_only if {
	count(permitted) > 0
	every c in permitted {
		data.register.categories[c].hit_only
	}
}

default _hit_only := false

_hit_only := true if hit_only

outcome := "denied" if count(deny) > 0

outcome := "escalated" if {
	count(deny) == 0
	count(escalate) > 0
}

outcome := "allowed-narrowed" if {
	count(deny) == 0
	count(escalate) == 0
	count(removed) > 0
}

outcome := "allowed" if {
	count(deny) == 0
	count(escalate) == 0
	count(removed) == 0
}

_extra_obligations := escalation_decision.obligations if escalation_decision

_extra_obligations := {} if not escalation_decision

obligations := object.union(
	{"retain_until": common.retain_until, "onward_sharing": false, "results_only": object.get(purpose, "results_only", false)},
	_extra_obligations,
) if {
	outcome in {"allowed", "allowed-narrowed"}
}

obligations := null if {
	not outcome in {"allowed", "allowed-narrowed"}
}

_allowed := outcome in {"allowed", "allowed-narrowed"}

default _decision_id := null

_decision_id := escalation_decision.id

decision := {
	"allow": _allowed,
	"escalate": outcome == "escalated",
	"outcome": outcome,
	"reasons": array.concat(array.concat(sort_reasons(deny), sort_reasons(escalate)), sort_reasons(removal_reasons)),
	"permitted_categories": sort([c | some c in permitted; _allowed]),
	"removed_categories": sort([c | some c in removed]),
	"hit_only": _hit_only,
	"obligations": obligations,
	"escalation_decision": _decision_id,
	"policy_version": data.wgs.version.policy_version,
}

sort_reasons(reasons) := [r | some key in sort([k | some x in reasons; k := concat(":", [x.code, object.get(x, "category", "")])]); some r in reasons; concat(":", [r.code, object.get(r, "category", "")]) == key]
