# Facts that depend on the register only, never on a request: who a holder is in a partnership, what it
# supplies for a purpose to a requester role, why a category would be removed, the office-hour bounds.
#
# wgs.common and wgs.exchange read them through `data.register_index` when it is there and compute them
# here when it is not (one function, so both ways give the same facts). The embedded engine evaluates
# `tables` once per register version and loads the result as `data.register_index` next to
# `data.register`: an input-independent cache, recomputed from the same Rego, so a decision never sees
# anything the register does not say. Without it (OPA server, the Rego unit tests, which may patch
# data.register with `with`), every fact is computed per evaluation, only for the holders asked about.
package wgs.index

import rego.v1

tables := {
	"office_hours": office_hours(data.register.office_hours),
	"hit_only_categories": hit_only_categories,
	"holders": {pid: {purpose_id: {role: {org: holder_facts(pid, purpose_id, role, org) |
		some org in _organisations(partnership)
	} |
		some role in _roles(partnership)
	} |
		some purpose_id, _ in partnership.purposes
	} |
		some pid, partnership in data.register.partnerships
	},
}

_organisations(partnership) := {p.organisation | some p in partnership.participants}

_roles(partnership) := {p.role | some p in partnership.participants}

hit_only_categories := {c | some c, category in data.register.categories; category.hit_only}

never_disclosed(partnership_id) := {name | some name, category in data.register.categories; category.never_shared} | {name | some name in data.register.partnerships[partnership_id].never_disclosed}

# Rule 7's bounds: "HH:MM" -> minutes since midnight (digit by digit: leading zeros are not JSON numbers).
office_hours(hours) := {
	"timezone": hours.timezone,
	"weekdays": {name | some name, number in _weekday_numbers; number in hours.weekdays},
	"start": _minutes(hours.start),
	"end": _minutes(hours.end),
}

_weekday_numbers := {"Monday": 1, "Tuesday": 2, "Wednesday": 3, "Thursday": 4, "Friday": 5, "Saturday": 6, "Sunday": 7}

_digit(text, position) := indexof("0123456789", substring(text, position, 1))

_minutes(hhmm) := ((((_digit(hhmm, 0) * 10) + _digit(hhmm, 1)) * 60) + (_digit(hhmm, 3) * 10)) + _digit(hhmm, 4)

# What the register says about holder organisation `org` when a `requester_role` asks for `purpose_id` in
# `partnership_id` (rules 1, 3 and 4). `requester_role` is null when the requester is no participant; any
# id may name nothing in the register (then the sets are empty and `participant` is null).
holder_facts(partnership_id, purpose_id, requester_role, org) := facts if {
	partnership := object.get(data.register.partnerships, partnership_id, {})
	purpose := object.get(object.get(partnership, "purposes", {}), purpose_id, {})
	p := _participant_or_null(partnership, org)
	nd := never_disclosed(partnership_id)
	supplied := {c | some c in purpose.supplies[p.role]}
	receivable := {c | some c in purpose.receives[requester_role]}

	# Rule 3: what this holder could ever supply in this partnership (a requested category outside it is
	# not this holder's business: no narrowing).
	domain := {c | some q in partnership.purposes; some c in q.supplies[p.role]}
	base := (supplied & receivable) - nd
	facts := {
		"participant": p,
		"deny": _holder_deny(partnership_id, org, p),  # an array: a set of objects would not survive the cache
		"supplied": supplied,
		"hit_only_holder": count({1 | p.role in purpose.hit_only_holders}) > 0,
		"base": base,
		"domain_nd": domain | nd,
		"reasons": {c: r | some c in ((domain | nd) - base); r := _removal_reason(c, nd, supplied, receivable, org, purpose_id, requester_role)},
		"providable": ({c | some c in purpose.supplies[requester_role]} & {c | some c in purpose.receives[p.role]}) - nd,
	}
}

_participant_or_null(partnership, org) := p if {
	some p in partnership.participants
	p.organisation == org
} else := null

# Rule 1 for the holder.
_holder_deny(partnership_id, org, p) := [{"code": "holder-not-participant", "message": sprintf("`%s` is not a participant of `%s`", [org, partnership_id])}] if {
	p == null
	data.register.partnerships[partnership_id]
} else := [{"code": "holder-retired", "message": "the holder's participation is retired"}] if {
	p.status != "active"
} else := []

# Rules 3 and 4: why category `c` is removed when requested (undefined: it is not removed by the register).
_removal_reason(c, nd, supplied, receivable, org, purpose_id, requester_role) := {"code": "never-disclosed", "category": c, "message": sprintf("`%s` is never disclosed through the gateway", [c])} if {
	c in nd
} else := {"code": "category-not-supplied", "category": c, "message": sprintf("`%s` does not supply `%s` for `%s`", [org, c, purpose_id])} if {
	not c in supplied
} else := {"code": "category-not-receivable", "category": c, "message": sprintf("role `%s` may not receive `%s` for `%s`", [requester_role, c, purpose_id])} if {
	not c in receivable
	requester_role != null
}
