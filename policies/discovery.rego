# WGS hit/no-hit discovery decision per target holder: the same purpose binding as an exchange
# (rules 1, 2, 4, 5), and the holder must supply at least one requested category the requester may receive.
# A requested category of the holder's that is not searched is removed with its reason, as in an exchange
# (rules 3 and 4: `allowed-narrowed`), so the requester and the log learn what a hit or no-hit did not cover.
# Rules 6 and 7 escalate it as they do an exchange, and a valid escalation decision for the holder (rule 8)
# overrides them and bounds the categories asked about to those it states (wgs.common has these rules, for
# both). Deny beats escalate beats allow.
# Entry points as in wgs.exchange: `decision` (one target, input.request.holder) and `decisions` (input
# without request.holder and with "holders": [...]; one decision per holder, in order, each naming its
# holder organisation as `holder`).
package wgs.discovery

import rego.v1

import data.wgs.common.escalation_decisions
import data.wgs.common.holder_facts
import data.wgs.common.register_sha256
import data.wgs.common.request_deny
import data.wgs.common.request_escalate_sorted
import data.wgs.common.requested
import data.wgs.index.reason_pair

decision := _decision(_context, input.request.holder)

decisions := [_decision(ctx, h) | ctx := _context; some h in input.holders]

# What `_decision` reads that does not depend on the holder, built once per evaluation.
_context := {
	# Rules 6 and 7 for every holder, except none for the holder of a valid escalation decision (rule 8).
	"escalate": request_escalate_sorted,
	"escalate_by_holder": {org: [] | some org, _ in escalation_decisions},
	# Rule 8: a valid escalation decision narrows its holder's categories to those it states.
	"bounds": {org: {c | some c in d.permitted_categories} | some org, d in escalation_decisions},
	"escalation_ids": {org: d.id | some org, d in escalation_decisions},
	"register_sha256": register_sha256,
}

_decision(ctx, h) := d if {
	org := h.organisation
	f := holder_facts(org)
	base := object.keys(f.base)
	searchable := (requested & base) & object.get(ctx.bounds, org, requested)
	common_deny := request_deny | {r | some r in f.deny}
	deny := common_deny | _nothing_searchable(common_deny, searchable)
	escalate := object.get(ctx.escalate_by_holder, org, ctx.escalate)

	# Rules 3 and 4 as in wgs.exchange: outside the holder's domain a requested category is not its business;
	# inside it, what is not searched is removed, with the register's reason (f.removal_reasons) or, for one
	# of base (only an escalation decision leaves those out), the decision's.
	removed := (requested & object.keys(f.domain_nd)) - searchable
	removal := [p | some p in object.filter(f.removal_reasons, removed)]
	narrowed := [reason_pair({"code": "narrowed-by-escalation-decision", "category": c, "message": sprintf("escalation decision `%s` does not include `%s`", [ctx.escalation_ids[org], c])}) |
		ctx.escalation_ids[org]
		some c in removed & base
	]
	outcome := {
		true: {true: {true: "denied", false: "denied"}, false: {true: "denied", false: "denied"}},
		false: {true: {true: "escalated", false: "escalated"}, false: {true: "allowed-narrowed", false: "allowed"}},
	}[count(deny) > 0][escalate != []][removed != set()]
	allowed := {"allowed": true, "allowed-narrowed": true, "denied": false, "escalated": false}[outcome]
	d := {
		"allow": allowed,
		"escalate": outcome == "escalated",
		"outcome": outcome,
		"reasons": array.concat(array.concat([r | some r in deny], escalate), [r | some [_, r] in sort(array.concat(removal, narrowed))]),
		"permitted_categories": sort([c | some c in searchable; allowed]),
		"removed_categories": sort(removed),
		"hit_only": true,
		"obligations": null,
		"escalation_decision": object.get(ctx.escalation_ids, org, null),
		"holder": org,
		"policy_version": data.wgs.version.policy_version,
		"register_sha256": ctx.register_sha256,
	}
}

_nothing_searchable(common_deny, searchable) := {{"code": "no-permitted-categories", "message": "this holder supplies none of the requested categories to this requester for this purpose"} |
	count(common_deny) == 0
	count(searchable) == 0
}
