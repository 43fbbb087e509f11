# Facts that depend on the register only, never on a request: who a holder is in a partnership, what it
# supplies for a purpose to a requester role, why a category would be removed, the office-hour bounds.
#
# wgs.common and wgs.exchange read them through `data.register_index` when it is there and compute them
# here when it is not (one function, so both ways give the same facts). The embedded engine evaluates
# `tables` once per register version and loads the result, as JSON, as `data.register_index` next to
# `data.register`: an input-independent cache, recomputed from the same Rego, so a decision never sees
# anything the register does not say. Without it (OPA server, the Rego unit tests, which may patch
# data.register with `with`), every fact is computed per evaluation, only for the holders asked about.
#
# The cache is JSON, which has no sets: a set of categories is written as an object `{category: true}`
# (computed here the same way), and the policies read it as the set `object.keys(...)`.
package wgs.index

import rego.v1

# holders[partnership][purpose]: "by_requester_role"[role][org] for a requester that is a participant,
# "no_requester_role"[org] for one that is not; for every organisation of the register (a holder outside
# the partnership has facts too: it is denied, with reasons).
tables := {
	"office_hours": office_hours(data.register.office_hours),
	"hit_only_categories": {c: true | some c in hit_only_categories},
	"participants": {pid: {p.organisation: p | some p in partnership.participants} | some pid, partnership in data.register.partnerships},
	"holders": {pid: {purpose_id: {
		"by_requester_role": {role: _facts_by_org(pid, purpose_id, role) | some role in _roles(partnership)},
		"no_requester_role": _facts_by_org(pid, purpose_id, null),
	} |
		some purpose_id, _ in partnership.purposes
	} |
		some pid, partnership in data.register.partnerships
	},
}

_facts_by_org(pid, purpose_id, role) := {org: holder_facts(pid, purpose_id, role, org) | some org, _ in data.register.organisations}

_roles(partnership) := {p.role | some p in partnership.participants}

hit_only_categories := {c | some c, category in data.register.categories; category.hit_only}

never_disclosed(partnership_id) := {name | some name, category in data.register.categories; category.never_shared} | {name | some name in object.get(data.register.partnerships, [partnership_id, "never_disclosed"], [])}

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
# id may name nothing in the register (then the sets are empty and `participant` is null). Sets of
# categories are objects `{category: true}` (see above):
#   base       what the holder may disclose to this requester for this purpose (never a hit-only category
#              of the vocabulary when the holder's role is no hit/no-hit holder for the purpose: that one
#              would answer with records; nothing from a police, tax or prosecution role answering with
#              records when the requester's role is a private participant's, see `covenant_barred`);
#   domain_nd  base plus what rules 3 and 4 remove, each with its reason (what the holder could ever
#              supply in this partnership and what is never disclosed, less what has no such reason): a
#              requested category outside it is not this holder's business (no narrowing). So every
#              removed category of a decision, denied or not, has a reason of its own;
#   deny       the holder's own rule-1 reasons (an array), and as `reason_pair`s in deny_pairs;
#   removal_reasons  why a category of domain_nd outside base is removed, per category, as a
#              `reason_pair` (rules 3 and 4); its keys (domain_nd less base) are what a request is refused
#              of this holder when no escalation decision narrows it (whatever is asked of it);
#   providable what the requester may hand to this holder with the request (records: never a hit-only
#              category of the vocabulary, and nothing from a police, tax or prosecution role to a private
#              participant's role).
#
# Written so that every value it binds is defined (object.get with defaults, comprehensions over
# collections that exist), as the RVM requires (see wgs.common).
holder_facts(partnership_id, purpose_id, requester_role, org) := {
	"participant": p,
	"deny": deny, # an array: a set of objects would not survive the cache
	"deny_pairs": [reason_pair(r) | some r in deny],
	"hit_only_holder": hit_only_holder,
	"base": {c: true | some c in base},
	"domain_nd": {c: true | some c in base | removable},
	"removal_reasons": {c: reason_pair(_removal_reason(c, nd, supplied, receivable, barred, org, purpose_id, requester_role)) | some c in removable},
	"providable": {c: true | some c in providable},
} if {
	partnership := object.get(data.register.partnerships, partnership_id, {})
	purpose := object.get(partnership, ["purposes", purpose_id], {})
	p := _participant_or_null(partnership, org)
	role := _role_or_null(p)
	nd := never_disclosed(partnership_id)
	supplied := {c | some c in object.get(purpose, ["supplies", role], [])}
	receivable := {c | some c in object.get(purpose, ["receives", requester_role], [])}
	domain := {c | some q in object.get(partnership, "purposes", {}); some c in object.get(q, ["supplies", role], [])}
	hit_only_holder := role in object.get(purpose, "hit_only_holders", [])

	# A hit-only category this holder would otherwise disclose as records (rule 3: removed, with a reason).
	records_only := object.get({false: ((supplied & receivable) & hit_only_categories) - nd}, hit_only_holder, set())
	# What a police, tax or prosecution role would disclose as records to a private participant's role
	# (removed, with a reason: it gets those holders' data as hit/no-hit only).
	private := object.get(private_roles, partnership_id, set())
	barred := object.get({true: ((supplied & receivable) - nd) - records_only}, covenant_barred(private, requester_role, role, hit_only_holder), set())
	base := (((supplied & receivable) - nd) - records_only) - barred
	# What rules 3 and 4 remove, each for a reason of its own. For a requester that is a participant that
	# is all of domain | nd outside base; for one that is not, a category the holder supplies has no such
	# reason (rule 1 denies the request as a whole, `requester-not-participant`), so it is not removed.
	removable := {c | some c in (domain | nd) - base; _removable(c, nd, supplied, receivable, requester_role, records_only | barred)}
	# Handed over as records, so never a hit-only category (rule 3), whoever supplies it, and nothing from a
	# police, tax or prosecution role to a private participant's role.
	providable := object.get({false: (({c | some c in object.get(purpose, ["supplies", requester_role], [])} & {c | some c in object.get(purpose, ["receives", role], [])}) - nd) - hit_only_categories}, covenant_barred(private, role, requester_role, false), set())
	deny := _holder_deny(partnership_id, org, p)
}

# REGISTER.md (FEC): "A bank never receives police, tax or prosecution data — only hit/no-hit." A private
# participant under a covenant gets at most hit/no-hit from a holder of these roles, whatever the register
# data says (the gateway's loader refuses a register saying otherwise, gateway/register/covenant.py, whose
# PUBLIC_ONLY_HOLDER_ROLES must be this list: a test compares them). Only here, so that an OPA bundle with
# another register's data still cannot disclose such records.
public_only_holder_roles := {"police", "tax", "prosecution"}

# The roles private participants hold, by partnership: a participant whose organisation is not of the
# `public` sector (failing closed on an organisation the register does not describe). The policy decides
# per role, so a public participant sharing a role with a private one is held to the same line. (A rule,
# evaluated once per evaluation, not per holder: the register index calls holder_facts for every
# purpose, requester role and organisation.)
private_roles := {pid: {p.role | some p in partnership.participants; object.get(data.register.organisations, [p.organisation, "sector"], "") != "public"} | some pid, partnership in data.register.partnerships}

# Whether `giver_role` answering (or handing over to) `taker_role` is barred: the taker's role is a private
# participant's, the giver's one of public_only_holder_roles, and the giver does not answer hit/no-hit.
# Always a boolean (an argument of object.get's lookups above).
covenant_barred(private, taker_role, giver_role, hit_only_holder) := true if {
	hit_only_holder == false
	giver_role in public_only_holder_roles
	taker_role in private
} else := false

# A reason with its sort key, `[code:category, reason]`: a decision lists its reasons ordered by code, then
# category, so it keeps them as pairs and sorts the pairs (one sort; no key computed per decision).
reason_pair(r) := [concat(":", [r.code, object.get(r, "category", "")]), r]

_participant_or_null(partnership, org) := ps[0] if {
	ps := [p | some p in object.get(partnership, "participants", []); p.organisation == org]
	count(ps) > 0
} else := null

_role_or_null(p) := p.role if p != null

_role_or_null(null) := null

# Rule 1 for the holder.
_holder_deny(partnership_id, org, p) := [{"code": "holder-not-participant", "message": sprintf("`%s` is not a participant of `%s`", [org, partnership_id])}] if {
	p == null
	data.register.partnerships[partnership_id]
} else := [{"code": "holder-retired", "message": "the holder's participation is retired"}] if {
	p.status != "active"
} else := []

# Rules 3 and 4: why category `c` is removed when requested. `_removable` says whether the register gives a
# reason at all: a category the holder supplies to a requester that is no participant has none.
_removable(c, nd, _, _, _, _) if c in nd

_removable(c, _, supplied, _, _, _) if not c in supplied

_removable(c, _, _, receivable, requester_role, _) if {
	not c in receivable
	requester_role != null
}

_removable(c, _, _, _, _, records_only) if c in records_only

_removal_reason(c, nd, supplied, receivable, barred, org, purpose_id, requester_role) := {"code": "never-disclosed", "category": c, "message": sprintf("`%s` is never disclosed through the gateway", [c])} if {
	c in nd
} else := {"code": "category-not-supplied", "category": c, "message": sprintf("`%s` does not supply `%s` for `%s`", [org, c, purpose_id])} if {
	not c in supplied
} else := {"code": "category-not-receivable", "category": c, "message": sprintf("role `%s` may not receive `%s` for `%s`", [requester_role, c, purpose_id])} if {
	not c in receivable
} else := {"code": "private-participant-hit-only", "category": c, "message": sprintf("a private participant (role `%s`) gets police, tax and prosecution data as hit/no-hit only: `%s` does not disclose `%s` for `%s`", [requester_role, org, c, purpose_id])} if {
	c in barred
} else := {"code": "hit-only-category", "category": c, "message": sprintf("`%s` is answered as hit/no-hit only, and `%s` answers `%s` with records", [c, org, purpose_id])}
