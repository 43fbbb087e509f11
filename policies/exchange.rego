# WGS exchange decision per target holder (REGISTER.md rules 1-9).
# Input: gateway.policy.model.PolicyInput, as JSON. Data: data.register (the partnership register as JSON).
# Deny beats escalate beats allow; narrowing removes categories and says why per category.
#
# Two entry points, one set of rules:
#   decision  - one target: {"request": {..., "holder": {...}}, "context": ..., "request_fingerprint": ...}
#   decisions - every target of one request at once: the same input without `request.holder` and with
#               "holders": [{"organisation": ..., "system": ...}, ...]; a list with, for each holder in
#               order, exactly the `decision` that holder would get.
# Every decision names the holder organisation it is for (`holder`): the gateway refuses one for another,
# so a batch answered out of order cannot be applied to the wrong holders.
# What does not depend on the holder is a rule (evaluated once per evaluation, so once per batch); the
# per-holder part is `_decision(org)`, which binds each value once in a local variable and takes the
# register-only facts about the holder from wgs.common.holder_facts.
package wgs.exchange

import rego.v1

import data.wgs.common.categories
import data.wgs.common.holder_facts
import data.wgs.common.escalation_decisions
import data.wgs.common.indexed_holders
import data.wgs.common.provided_categories
import data.wgs.common.purpose
import data.wgs.common.register_sha256
import data.wgs.common.request_deny
import data.wgs.common.request_escalate_sorted
import data.wgs.common.requested
import data.wgs.common.requester
import data.wgs.common.retain_until
import data.wgs.index.reason_pair

decision := _plain_decision(_plain_context, holder_facts(input.request.holder.organisation), input.request.holder.organisation) if {
	_plain_request
} else := _decision(_context, holder_facts(input.request.holder.organisation), input.request.holder.organisation)

decisions := [_plain_decision(ctx, table[h.organisation], h.organisation) | ctx := _plain_context; table := _holder_table; some h in input.holders] if {
	_plain_request
} else := [_decision(ctx, table[h.organisation], h.organisation) | ctx := _context; table := _holder_table; some h in input.holders]

# The usual request: it breaks no rule of its own (request_deny), hands the holders nothing and comes with
# no escalation decision (none at all: one that is no valid decision, whose escalation_decisions are empty
# too, takes `_decision`, which gives the same documents in more steps). Its decisions are
# `_plain_decision`s: `_decision` without what cannot occur then (the same documents, fewer evaluation steps
# per holder).
_plain_request if {
	request_deny == set()
	provided_categories == [] # so `provided` is empty
	not input.context.escalation_decision # so escalation_decisions is empty
}

# --- independent of the holder -------------------------------------------------------------------------

# Data the requester hands to the holder (e.g. dissolution grounds to the KvK, S2) is bound the same way:
# the requester's role supplies it for this purpose and the holder's role may receive it (rules 3 and 4).
provided := {c | some c in provided_categories} # none when malformed (then denied: wgs.common)

# Rule 9: obligations on every allow. (Null when the purpose is unknown: then nothing is allowed.)
_obligations_on_allow := {"retain_until": retain_until, "onward_sharing": false, "results_only": object.get(purpose, "results_only", false)} if {
	purpose
	retain_until # undefined without a valid `requested_at` (then denied as input-incomplete)
} else := null

# Rules 8 and 9: an escalation decision's obligations, for its holder, only tighten the purpose's: the
# earlier `retain_until` of the two, `results_only` when either says so, `onward_sharing` always false.
_escalation_obligations := {org: _tightened(_obligations_on_allow, object.get(d, "obligations", {})) |
	_obligations_on_allow != null
	some org, d in escalation_decisions
}

# (Both dates are YYYY-MM-DD, so the earlier one sorts first.)
_tightened(on_allow, extra) := {
	"retain_until": sort([on_allow.retain_until, object.get(extra, "retain_until", on_allow.retain_until)])[0],
	"onward_sharing": false,
	"results_only": {true: true, false: object.get(extra, "results_only", false)}[on_allow.results_only],
}

# Rule 8: a valid escalation decision narrows its holder's categories to those it states.
_escalation_bounds := {org: {c | some c in d.permitted_categories} | some org, d in escalation_decisions}

# What `_plain_decision` reads that does not depend on the holder (see `_context`).
_plain_context := {
	"categories": categories,
	"escalate": request_escalate_sorted,
	"on_allow": _obligations_on_allow,
	"policy_version": data.wgs.version.policy_version,
	"register_sha256": register_sha256,
}

# Everything `_decision` reads that does not depend on the holder, in one object built once per
# evaluation and passed to it: reading a field of an argument costs less than a rule reference.
_context := {
	"requested": requested,
	"request_deny": sort([reason_pair(r) | some r in request_deny]),
	"escalate": request_escalate_sorted,
	"escalations": escalation_decisions,
	"escalate_by_holder": {org: [] | some org, _ in escalation_decisions},
	"escalation_ids": {org: d.id | some org, d in escalation_decisions},
	"bounds": _escalation_bounds,
	"obligations": _escalation_obligations,
	"on_allow": _obligations_on_allow,
	"provided": provided,
	"policy_version": data.wgs.version.policy_version,
	"register_sha256": register_sha256,
}

# The facts (wgs.common.holder_facts) about every target holder of a batch, by organisation: the register
# index's table, plus the facts computed here for a target it does not hold (an organisation the register
# does not know; every target when there is no index). One target (`decision`) takes its facts from
# holder_facts directly.
_holder_table := object.union(
	indexed_holders,
	{org: holder_facts(org) | known := indexed_holders; some h in input.holders; org := h.organisation; not known[org]},
)

# --- per holder ----------------------------------------------------------------------------------------

# The decision for holder organisation `org` of facts `f` (wgs.common.holder_facts: for one target, looked up
# directly; for a batch, from `_holder_table`), `ctx` being `_context`. This body runs once per holder, so it
# is written for few evaluation steps: set operators instead of comprehensions over categories, everything
# that does not depend on the holder read from `ctx` (prepared once per evaluation), emptiness as a
# comparison with an empty literal, the outcome as a table lookup, and reasons kept as `reason_pair`s so
# that ordering them is one sort. (It is a function, not the body of the `decisions` comprehension: in
# the RVM, a comprehension nested in another comprehension's body can end the outer loop.)
_decision(ctx, f, org) := {
	"allow": allowed,
	"escalate": outcome == "escalated",
	"outcome": outcome,
	"reasons": [r | [deny, escalate, removal, narrowed] != [[], [], {}, []]; some r in _reasons(deny, escalate, removal, narrowed)],
	"permitted_categories": object.get({true: sort(permitted)}, allowed, []),
	"removed_categories": sort(removed),
	"hit_only": f.hit_only_holder,
	"obligations": object.get({true: object.get(ctx.obligations, org, ctx.on_allow)}, allowed, null),
	"escalation_decision": object.get(ctx.escalation_ids, org, null),
	"holder": org,
	"policy_version": ctx.policy_version,
	"register_sha256": ctx.register_sha256,
} if {
	req := ctx.requested

	# Rules 3 and 4 give `base`, what this holder may disclose to this requester for this purpose. A
	# hit/no-hit holder (rule 3, e.g. FIOD for Bibob) is always asked about all of it when targeted, and
	# answers hit/no-hit only; any other holder about what was requested, with records (so its `base` holds
	# no hit-only category of the vocabulary: wgs.index.holder_facts removes those, with a reason; nor, to a
	# private participant's role, anything of a police, tax or prosecution role: `private-participant-hit-only`,
	# see wgs.index.covenant_barred). Rule 8: an escalation decision never widens that, and
	# narrows it to the categories it states.
	base := object.keys(f.base)
	permitted := (base & object.get({true: base}, f.hit_only_holder, req)) & object.get(ctx.bounds, org, base)

	# Outside the holder's domain a requested category is not this holder's business (no narrowing).
	removed := (req & object.keys(f.domain_nd)) - permitted

	# Rules 1-5: the request's reasons, the holder's, handing data over; and nothing left to disclose. As
	# arrays of `reason_pair`s: no reason can occur twice (each code once, or once per category).
	common_deny := array.concat(ctx.request_deny, f.deny_pairs)
	provision_deny := [reason_pair({"code": "provision-not-allowed", "category": c, "message": sprintf("role `%s` may not hand `%s` to `%s` for `%s`", [requester.role, c, org, input.request.purpose])}) |
		some c in ctx.provided
		not f.providable[c]
		requester
	]
	nothing_permitted := {true: {true: [[
		"no-permitted-categories:",
		{"code": "no-permitted-categories", "message": "none of the requested categories may be disclosed by this holder for this purpose"},
	]], false: []}, false: {true: [], false: []}}[common_deny == []][permitted == set()]
	deny := array.concat(array.concat(common_deny, provision_deny), nothing_permitted)

	# Rules 6 and 7, unless a valid escalation decision answered them (rule 8).
	escalate := object.get(ctx.escalate_by_holder, org, ctx.escalate)

	# Rules 3 and 4: a reason per removed category: the register's (f.removal_reasons, for the categories
	# outside base, by category), or, for a category in base (only an escalation decision removes those),
	# the decision's.
	removal := object.filter(f.removal_reasons, removed)
	narrowed := [reason_pair({"code": "narrowed-by-escalation-decision", "category": c, "message": sprintf("escalation decision `%s` does not include `%s`", [ctx.escalation_ids[org], c])}) |
		ctx.escalation_ids[org]
		some c in removed & base
	]

	outcome := {
		true: {true: {true: "denied", false: "denied"}, false: {true: "denied", false: "denied"}},
		false: {true: {true: "escalated", false: "escalated"}, false: {true: "allowed-narrowed", false: "allowed"}},
	}[deny != []][escalate != []][removed != set()]
	allowed := [deny, escalate] == [[], []]
}

# `_decision` for a `_plain_request` (`ctx` is `_plain_context`): no request reasons, nothing provided, no
# escalation decision (so no bounds, no narrowing by one, the request's escalations for every holder and
# the usual obligations). Then a hit/no-hit holder is asked about all of `base` and any other holder about
# what was requested; either way what is refused is what was requested outside base in the holder's
# domain (the keys of f.removal_reasons), with f.removal_reasons of the requested categories.
# The categories asked are read as the request's list (`ctx.categories`, a list of names here), which
# `object.filter` takes as it takes a set: building the set `requested` costs a step per category.
_plain_decision(ctx, f, org) := {
	"allow": allowed,
	"escalate": outcome == "escalated",
	"outcome": outcome,
	"reasons": [r | [deny, escalate, removal] != [[], [], {}]; some r in _reasons(deny, escalate, removal, [])],
	"permitted_categories": object.get({true: sort(permitted)}, allowed, []),
	"removed_categories": sort(removed),
	"hit_only": f.hit_only_holder,
	"obligations": object.get({true: ctx.on_allow}, allowed, null),
	"escalation_decision": null,
	"holder": org,
	"policy_version": ctx.policy_version,
	"register_sha256": ctx.register_sha256,
} if {
	escalate := ctx.escalate
	permitted := object.keys(object.get({true: f.base}, f.hit_only_holder, object.filter(f.base, ctx.categories)))
	removal := object.filter(f.removal_reasons, ctx.categories)
	removed := object.keys(removal)
	holder_deny := f.deny_pairs
	deny := array.concat(holder_deny, {true: {true: [[
		"no-permitted-categories:",
		{"code": "no-permitted-categories", "message": "none of the requested categories may be disclosed by this holder for this purpose"},
	]], false: []}, false: {true: [], false: []}}[holder_deny == []][permitted == set()])
	outcome := {
		true: {true: {true: "denied", false: "denied"}, false: {true: "denied", false: "denied"}},
		false: {true: {true: "escalated", false: "escalated"}, false: {true: "allowed-narrowed", false: "allowed"}},
	}[deny != []][escalate != []][removed != set()]
	allowed := [deny, escalate] == [[], []]
}

# A decision's reasons: the denials, then the escalations, then the removals, each in order (denials and
# removals as `reason_pair`s; the removals by category, plus those of an escalation decision).
_reasons(deny, escalate, removal, narrowed) := array.concat(array.concat([r | some [_, r] in sort(deny)], escalate), [r | some [_, r] in sort(array.concat([p | some p in removal], narrowed))])
