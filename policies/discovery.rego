# WGS hit/no-hit discovery decision for ONE target holder: the same purpose binding as an exchange
# (rules 1, 2, 4, 5), and the holder must supply at least one requested category the requester may receive.
package wgs.discovery

import rego.v1

import data.wgs.common

supplied := {c | some c in common.purpose.supplies[common.holder.role]}

receivable := {c | some c in common.purpose.receives[common.requester.role]}

searchable := ((common.requested & supplied) & receivable) - common.never_disclosed

deny contains r if {
	some r in common.deny
}

deny contains {"code": "no-permitted-categories", "message": "this holder supplies none of the requested categories to this requester for this purpose"} if {
	count(common.deny) == 0
	count(searchable) == 0
}

decision := {
	"allow": count(deny) == 0,
	"escalate": false,
	"outcome": outcome,
	"reasons": [r | some r in deny],
	"permitted_categories": sort([c | some c in searchable; count(deny) == 0]),
	"removed_categories": [],
	"hit_only": true,
	"obligations": null,
	"escalation_decision": null,
	"policy_version": data.wgs.version.policy_version,
}

outcome := "allowed" if count(deny) == 0

outcome := "denied" if count(deny) > 0
