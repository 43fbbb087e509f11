# WGS hit/no-hit discovery decision per target holder: the same purpose binding as an exchange
# (rules 1, 2, 4, 5), and the holder must supply at least one requested category the requester may receive.
# Entry points as in wgs.exchange: `decision` (one target, input.request.holder) and `decisions` (input
# without request.holder and with "holders": [...]; one decision per holder, in order).
package wgs.discovery

import rego.v1

import data.wgs.common.holder_facts
import data.wgs.common.request_deny
import data.wgs.common.requested

decision := _decision(input.request.holder)

decisions := [_decision(h) | some h in input.holders]

_decision(h) := d if {
	org := h.organisation
	f := holder_facts(org)
	searchable := requested & object.keys(f.base)
	common_deny := request_deny | {r | some r in f.deny}
	deny := common_deny | _nothing_searchable(common_deny, searchable)
	allowed := count(deny) == 0
	d := {
		"allow": allowed,
		"escalate": false,
		"outcome": _outcome(allowed),
		"reasons": [r | some r in deny],
		"permitted_categories": sort([c | some c in searchable; allowed]),
		"removed_categories": [],
		"hit_only": true,
		"obligations": null,
		"escalation_decision": null,
		"policy_version": data.wgs.version.policy_version,
	}
}

_nothing_searchable(common_deny, searchable) := {{"code": "no-permitted-categories", "message": "this holder supplies none of the requested categories to this requester for this purpose"} |
	count(common_deny) == 0
	count(searchable) == 0
}

_outcome(true) := "allowed"

_outcome(false) := "denied"
