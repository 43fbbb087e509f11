# Shared facts about a request: the partnership, purpose and participants it names, the escalations of
# rules 6 and 7 and the escalation decision of rule 8 (REGISTER.md rules 1, 2, 5, 6, 7 and 8). Used by
# wgs.exchange and wgs.discovery.
#
# Performance shape (every rule reference, function call and `data.` lookup costs evaluation steps): what
# does not depend on the target holder is a rule over `input.request`, evaluated once per evaluation (so
# once for a whole batch of holders); what depends on the holder comes from `holder_facts(org)`, the
# register-only facts of wgs.index. Callers import single rules (`import data.wgs.common.purpose`):
# `common.x` through a package import makes regorus's interpreter evaluate the whole package.
#
# Two evaluators run these files (gateway/policy/engine.py): regorus's interpreter and its compiled RVM,
# which must give the same documents. The RVM departs from OPA in three places, so these files avoid all
# three: a body followed by `else` starts with plain conditions and binds (`:=`, `some ... in`) nothing
# that may be undefined or empty (the RVM does not fall through to `else` when such a binding fails); a
# comprehension's head is defined whenever its body holds (the RVM keeps an undefined element where OPA
# drops it); and no comprehension with conditions runs inside another comprehension's loop (in the RVM,
# an inner one whose conditions fail can end the outer loop; per-holder work is a function, its own
# frame).
# tests/unit/policy/test_rvm_equivalence.py checks the two evaluators against each other.

package wgs.common

import rego.v1

# The digest of the register this evaluation reads (`data.register.sha256`, the SHA-256 the gateway records
# for its register and adds to the document it loads), which every decision carries (`register_sha256`): the
# gateway refuses a decision made under any register but its own (an OPA server shared with a gateway of
# another register, gateway/policy/engine.py), also one of the same version string and other content. Blank
# when the register document has none (a Rego unit test's register): the gateway refuses that decision.
# Undefined without a register: no decision then (how the gateway tells that an OPA server lost it).
register_sha256 := object.get(data.register, "sha256", "")

partnership := data.register.partnerships[input.request.partnership]

purpose := partnership.purposes[input.request.purpose]

requester := p if {
	p := _participants[input.request.requester.organisation]
	input.request.requester.system in p.systems
}

# The partnership's participants by organisation (from the register index when the engine provides it).
_participants := data.register_index.participants[input.request.partnership] if {
	data.register_index.participants
} else := {p.organisation: p | some p in partnership.participants}

# The requester's role, null when the requester is no participant.
requester_role := requester.role if {
	requester
} else := null

# The target holder of a one-target input (the batched rules pass each holder explicitly).
holder := p if {
	some p in partnership.participants
	p.organisation == input.request.holder.organisation
}

never_disclosed := data.wgs.index.never_disclosed(input.request.partnership)

# The categories asked, a set (empty when `request.categories` is no list: the request is then denied as
# input-incomplete, see `_categories_ok`). Iterated only when a list: over anything else regorus's
# interpreter fails the evaluation while the RVM reads it as none.
requested := {c | some c in categories} if {
	is_array(categories)
} else := set()

# Rules 1, 3 and 4 for holder organisation `org`: see wgs.index.holder_facts (precomputed per register
# version as data.register_index when the engine provides it, computed here otherwise).
holder_facts(org) := _holders_index[org] if {
	_holders_index[org]
} else := data.wgs.index.holder_facts(input.request.partnership, input.request.purpose, requester_role, org)

# The register index's facts about every holder organisation for this request (by organisation), {} when
# there are none (no index, or a partnership or purpose the register does not know).
indexed_holders := _holders_index if {
	_holders_index
} else := {}

_holders_index := data.register_index.holders[input.request.partnership][input.request.purpose].by_requester_role[requester.role] if {
	requester
} else := data.register_index.holders[input.request.partnership][input.request.purpose].no_requester_role

# Rule 1: requester and holder are active participants of the active partnership; the purpose belongs to it.
# `request_deny` holds the reasons that do not depend on the holder (the holder's are in holder_facts).
# The usual case, a request that breaks none of them, is recognised in one rule body; the full set is
# computed only when one of these conditions fails (and is then exactly the reasons below).
request_deny := set() if {
	partnership.status == "active"
	partnership.established <= request_date # undefined without a valid `requested_at`: input-incomplete
	_provided_ok
	_categories_ok
	purpose.legal_basis == input.request.legal_basis
	requester.status == "active"
	requester.role in purpose.requesters
	_usual_texts
	_minors_ok
	is_number(input.request.subject_count) # rule 6's counts as in `_non_negative_integer`
	floor(input.request.subject_count) == abs(input.request.subject_count)
	is_number(input.context.requests_today)
	floor(input.context.requests_today) == abs(input.context.requests_today)
} else := _request_deny

_minors_ok if input.request.subjects_minor == false

_minors_ok if purpose.minors_allowed

# Rule 2's texts (signal type and reference, case reference) as the usual request has them, in fewer steps
# than `_nonempty` three times (two builtin calls each): Rego orders values of different types (null,
# booleans, numbers, strings, arrays, objects and sets; in OPA and in both of regorus's evaluators), so
# when the least of the three is at least "!" and the greatest below "\u0085", all three are strings that
# start with one of U+0021 to U+0084, none of them white space: strings `_nonempty` accepts. Anything else
# (a reference that starts with a space or an accented letter, say) is not refused here: `_request_deny`
# then judges it.
_usual_texts if {
	texts := {input.request.signal.type, input.request.signal.reference, input.request.case_reference}
	"!" <= min(texts)
	max(texts) < "\u0085"
}

_request_deny contains {"code": "unknown-partnership", "message": sprintf("partnership `%s` is not in the register", [input.request.partnership])} if {
	not data.register.partnerships[input.request.partnership]
}

_request_deny contains {"code": "partnership-retired", "message": sprintf("partnership `%s` is %s: it denies everything", [input.request.partnership, partnership.status])} if {
	partnership.status != "active"
}

# Active in the register, yet not established on the request's date (in the register's time zone): a
# register published ahead of a new partnership's designation shares nothing before it.
_request_deny contains {"code": "partnership-not-established", "message": sprintf("partnership `%s` is established on %s: it shares nothing before", [input.request.partnership, partnership.established])} if {
	partnership.established > request_date
}

_request_deny contains {"code": "purpose-not-in-partnership", "message": sprintf("purpose `%s` does not belong to `%s`", [input.request.purpose, input.request.partnership])} if {
	partnership
	not partnership.purposes[input.request.purpose]
}

# (The requester's names read with defaults: a requester that names no organisation or no system is no
# participant either, and the reason must say so rather than be undefined, which left the denial without
# it, or, in discovery under the RVM, without any reason.)
_request_deny contains {"code": "requester-not-participant", "message": sprintf("`%s` (system `%s`) is not a participant of `%s`", [object.get(input.request, ["requester", "organisation"], "(none)"), object.get(input.request, ["requester", "system"], "(none)"), input.request.partnership])} if {
	partnership
	not requester
}

_request_deny contains {"code": "requester-retired", "message": "the requester's participation is retired"} if {
	requester.status != "active"
}

_request_deny contains {"code": "requester-role-not-allowed", "message": sprintf("role `%s` may not request for `%s`", [requester.role, input.request.purpose])} if {
	purpose
	not requester.role in purpose.requesters
}

# Rule 2: legal basis, signal and case reference. `not ... ==`, not `!=`: a request that names no legal
# basis is a mismatch too (`!=` with an absent value is undefined, and such a request was allowed).
_request_deny contains {"code": "legal-basis-mismatch", "message": sprintf("legal basis must be `%s` for `%s`", [purpose.legal_basis, input.request.purpose])} if {
	purpose
	not input.request.legal_basis == purpose.legal_basis
}

_request_deny contains {"code": "signal-missing", "message": "a signal (type and reference) is required"} if {
	not _has_signal
}

_request_deny contains {"code": "case-reference-missing", "message": "a case reference is required"} if {
	not _nonempty(input.request.case_reference)
}

_has_signal if {
	_nonempty(input.request.signal.type)
	_nonempty(input.request.signal.reference)
}

_nonempty(value) if {
	is_string(value)
	count(trim_space(value)) > 0
}

# Rule 5: minors only where the purpose allows them. Fails closed: a request that does not say
# `subjects_minor: false` may be about a minor.
_request_deny contains {"code": "minors-not-allowed", "message": sprintf("purpose `%s` does not allow data about minors", [input.request.purpose])} if {
	not input.request.subjects_minor == false
	not purpose.minors_allowed
}

# Rule 6 counts subjects and requests: without both counts as non-negative integers the bulk and daily-limit
# escalations cannot be judged (a missing or malformed count would simply not escalate), so such an input
# is denied. Likewise without a valid `requested_at` (rule 7's office hours and rule 1's start date of the
# partnership are judged on it) and with `provided_categories` that are no list of category names (absent:
# none; anything else would be read as none, and rules 3 and 4 on data handed to the holder skipped), and
# without `categories` as a non-empty list of category names (see `_categories_ok`). One
# reason naming every field at fault (each code occurs once in a decision). The fields are read with
# object.get: a missing one is null here, never an undefined binding (see the RVM notes above). The
# gateway always sends all of them well formed; this is for any other caller (an OPA server's).
_request_deny contains {"code": "input-incomplete", "message": sprintf("the policy input has no valid %s", [concat(", ", invalid)])} if {
	invalid := array.concat(
		[sprintf("%s (a non-negative integer)", [name]) | some name, value in _counts; not _non_negative_integer(value)],
		[description | some description, valid in _other_fields; not valid],
	)
	invalid != []
}

_counts := {
	"context.requests_today": object.get(input, ["context", "requests_today"], null),
	"request.subject_count": object.get(input, ["request", "subject_count"], null),
}

# The other fields checked, by how a reason names them: whether each is valid (a boolean, never undefined).
_other_fields := {
	"request.requested_at (an RFC 3339 date and time)": _requested_at_ok,
	"request.provided_categories (a list of category names)": _provided_ok,
	"request.categories (a non-empty list of category names)": _categories_ok,
}

# The categories asked (`request.categories`): a non-empty list of strings, as the API requires. Absent
# or malformed, they would be read as none (see `requested`), and a hit/no-hit holder, asked about all it
# supplies whatever was requested, allowed on a request that asked for nothing.
#
# wgs.exchange's usual request (`_plain_request`, so with `_categories_ok`) reads them as this list, not as the
# set `requested`, which costs a step per category to build: `object.filter` takes a list of keys too.
categories := object.get(input, ["request", "categories"], null)

_categories_ok := true if {
	is_array(categories)
	categories != []
	"" <= min(categories) # all strings: the least is no number (or less), the greatest no array (or more),
	max(categories) < [] # see `_usual_texts` (two builtin calls instead of one per category)
} else := false

# Data the requester hands to the holder (`provided_categories`, wgs.exchange): absent is none; present, a
# list of strings (each a category name or not: unknown categories get their own reasons). Read as none when
# malformed: the request is then denied as input-incomplete.
_provided := object.get(input, ["request", "provided_categories"], [])

_provided_ok := true if {
	_provided == [] # the usual case, in one step
} else := true if {
	is_array(_provided)
	[c | some c in _provided; not is_string(c)] == []
} else := false

provided_categories := _provided if {
	_provided_ok
} else := []

# A number that is its own floor and its own absolute value: an integer (1.0 is the integer 1 in Rego, as
# in JSON; 2.5 is no count) that is not negative (the floor of a negative number is below its absolute
# value). One comparison instead of two, as the fast path of `request_deny` runs it on every request.
_non_negative_integer(value) if {
	is_number(value)
	floor(value) == abs(value)
}

# Rule 7: office hours, Mon-Fri 07:00-19:00 in the register's time zone (DST handled by the time zone).
#
# `requested_at` must be a date and time in RFC 3339's form (`T` and `Z` upper case; seconds, and at most
# nanoseconds; `Z` or an offset) on a day that exists, in the years 1901 to 2099; otherwise `requested_ns`
# is undefined and the request denied as input-incomplete. Checked before it is parsed: on anything else
# time.parse_rfc3339_ns fails the evaluation (regorus's interpreter raises; the RVM leaves the decision
# undefined), and regorus accepts forms OPA refuses (a space for the `T`). The check runs on every
# evaluation, so it is written for few steps, above all few builtin calls (each costs several plain
# steps): no regular expression (regex.match alone cost more than this whole check, about 9 µs of an RVM
# decision's 60). The shape is matched with every digit read as 0, which also says where the offset is;
# then every field is a run of digits of a fixed width, compared as strings: the date's fields taken from
# one split at `-`, the minutes and seconds from one split at `:` (a field followed by more text, such
# as the day in "25T10:00:00Z", is compared with an exclusive bound: below "32" is a day up to 31). Small
# tables only, each a rule: the interpreter builds them on every evaluation (one of every day of the year
# cost it 70 µs a decision), and more so as literals inside this body (14 % more instructions a decision,
# for 2 % fewer in the RVM).
requested_ns := time.parse_rfc3339_ns(at) if {
	at := input.request.requested_at
	is_string(at)
	offset := _timestamp_shapes[strings.replace_n(_digits_as_zero, at)]
	date := split(at, "-") # year, month, "DDThh:mm:ss..." and, for a negative offset, its "hh:mm"
	date[0] > "1900"
	date[0] < "2100" # so with no leading 0, which to_number refuses
	date[2] >= "01"
	date[2] < _month_ends[date[1]][to_number(date[0]) % 4] # no such month: no such day
	clock := split(at, ":") # "YYYY-MM-DDThh", minutes, "ss..." and, for an offset, its minutes
	substring(at, 11, 2) <= "23"
	clock[1] < "6"
	clock[2] < "6"
	substring(at, offset[0], 2) <= "23"
	clock[offset[1]] < "6"
}

_requested_at_ok := true if {
	requested_ns
} else := false

# The forms of `requested_at` accepted, every digit as 0: seconds, a fraction of up to nine digits, then `Z`
# or an offset. Each with where its offset's hours are (a position in the text) and its minutes (an element
# of the text split at `:`); for `Z`, the time's own hours and seconds, checked twice.
_timestamp_shapes := {
	"0000-00-00T00:00:00Z": [11, 2], "0000-00-00T00:00:00+00:00": [20, 3], "0000-00-00T00:00:00-00:00": [20, 3],
	"0000-00-00T00:00:00.0Z": [11, 2], "0000-00-00T00:00:00.0+00:00": [22, 3], "0000-00-00T00:00:00.0-00:00": [22, 3],
	"0000-00-00T00:00:00.00Z": [11, 2], "0000-00-00T00:00:00.00+00:00": [23, 3], "0000-00-00T00:00:00.00-00:00": [23, 3],
	"0000-00-00T00:00:00.000Z": [11, 2], "0000-00-00T00:00:00.000+00:00": [24, 3], "0000-00-00T00:00:00.000-00:00": [24, 3],
	"0000-00-00T00:00:00.0000Z": [11, 2], "0000-00-00T00:00:00.0000+00:00": [25, 3], "0000-00-00T00:00:00.0000-00:00": [25, 3],
	"0000-00-00T00:00:00.00000Z": [11, 2], "0000-00-00T00:00:00.00000+00:00": [26, 3], "0000-00-00T00:00:00.00000-00:00": [26, 3],
	"0000-00-00T00:00:00.000000Z": [11, 2], "0000-00-00T00:00:00.000000+00:00": [27, 3], "0000-00-00T00:00:00.000000-00:00": [27, 3],
	"0000-00-00T00:00:00.0000000Z": [11, 2], "0000-00-00T00:00:00.0000000+00:00": [28, 3], "0000-00-00T00:00:00.0000000-00:00": [28, 3],
	"0000-00-00T00:00:00.00000000Z": [11, 2], "0000-00-00T00:00:00.00000000+00:00": [29, 3], "0000-00-00T00:00:00.00000000-00:00": [29, 3],
	"0000-00-00T00:00:00.000000000Z": [11, 2], "0000-00-00T00:00:00.000000000+00:00": [30, 3], "0000-00-00T00:00:00.000000000-00:00": [30, 3],
}

_digits_as_zero := {"1": "0", "2": "0", "3": "0", "4": "0", "5": "0", "6": "0", "7": "0", "8": "0", "9": "0"}

# The first day past the end of each month, by the year's remainder of division by 4 (from 1901 to 2099
# the leap years are exactly the multiples of 4).
_month_ends := {
	"01": ["32", "32", "32", "32"], "02": ["30", "29", "29", "29"], "03": ["32", "32", "32", "32"],
	"04": ["31", "31", "31", "31"], "05": ["32", "32", "32", "32"], "06": ["31", "31", "31", "31"],
	"07": ["32", "32", "32", "32"], "08": ["32", "32", "32", "32"], "09": ["31", "31", "31", "31"],
	"10": ["32", "32", "32", "32"], "11": ["31", "31", "31", "31"], "12": ["32", "32", "32", "32"],
}

_office_hours := data.register_index.office_hours if {
	data.register_index.office_hours
} else := data.wgs.index.office_hours(data.register.office_hours)

in_office_hours if {
	ns := requested_ns
	hours := _office_hours
	time.weekday([ns, hours.timezone]) in hours.weekdays
	clock := time.clock([ns, hours.timezone])
	minute := (clock[0] * 60) + clock[1]
	minute >= hours.start
	minute < hours.end
}

# The request's date in the register's time zone, [year, month, day] and YYYY-MM-DD: the day rules 1 and 9
# count from, as the daily count of rule 6 and the escalation deadlines take "today" there, not in UTC.
_request_day := time.date([requested_ns, _office_hours.timezone])

request_date := sprintf("%04d-%02d-%02d", _request_day)

# Rule 9: retain-until date, the purpose's retention in months after the request's date, on the same day
# of the month or the month's last day when it has no such day (31 August + 6 months is 28 February). Not
# time.add_date: OPA's (Go's AddDate) rolls over into the next month (3 March), past the retention, and
# regorus's clamps, so the two engines would disagree (tests/unit/policy/test_opa_builtins.py).
#
# A day of the month before the 29th is in every month: then the day is kept without asking how long the
# month is (the usual case in fewer steps; the same date).
retain_until := sprintf("%04d-%02d-%02d", [year, month, day]) if {
	_request_day[2] < 29
	[y, m, day] := _request_day
	months := ((y * 12) + (m - 1)) + purpose.retention.months
	month := (months % 12) + 1
	year := (months - (month - 1)) / 12
} else := sprintf("%04d-%02d-%02d", [year, month, min([day, _days_in_month(year, month)])]) if {
	[y, m, day] := _request_day
	months := ((y * 12) + (m - 1)) + purpose.retention.months
	month := (months % 12) + 1
	year := (months - (month - 1)) / 12
}

_days_in_month(year, month) := 29 if {
	month == 2
	_leap_year(year)
} else := [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]

_leap_year(year) if {
	year % 4 == 0
	year % 100 != 0
}

_leap_year(year) if year % 400 == 0

# Rule 6: bulk and daily volume; rule 7: office hours; for exchange and discovery alike. A valid escalation
# decision for the holder overrides all three (rule 8, see `escalation_decisions`).
request_escalate contains {"code": "bulk-request", "message": sprintf("%d subjects exceeds the threshold of %d for `%s`", [input.request.subject_count, purpose.bulk_threshold, input.request.purpose])} if {
	input.request.subject_count > purpose.bulk_threshold
	_non_negative_integer(input.request.subject_count) # else denied as input-incomplete (and %d would fail)
}

request_escalate contains {"code": "daily-limit", "message": sprintf("this system made %d requests today for `%s` (limit %d)", [input.context.requests_today, input.request.purpose, purpose.daily_limit_per_system])} if {
	input.context.requests_today >= purpose.daily_limit_per_system
	_non_negative_integer(input.context.requests_today) # else denied as input-incomplete (and %d would fail)
}

request_escalate contains {"code": "outside-office-hours", "message": sprintf("requests outside office hours (%s %s-%s %s) are escalated", [_office_days(hours.weekdays), hours.start, hours.end, hours.timezone])} if {
	purpose
	requested_ns # a request of unknown time is denied as incomplete, not escalated as outside office hours
	not in_office_hours
	not purpose.urgent
	hours := data.register.office_hours
}

# The register's office days as the reason states them: a run such as "Mon-Fri", or a list ("Mon, Wed").
_office_days(days) := sprintf("%s-%s", [_day_names[min(days)], _day_names[max(days)]]) if {
	count(days) > 1
	sort(days) == numbers.range(min(days), max(days))
} else := concat(", ", [_day_names[d] | some d in sort(days)])

_day_names := {1: "Mon", 2: "Tue", 3: "Wed", 4: "Thu", 5: "Fri", 6: "Sat", 7: "Sun"}

# The escalations in reason order. The usual request escalates for none of the three reasons: recognised in
# one rule body (within both limits, in office hours), `request_escalate` is then not evaluated.
request_escalate_sorted := [] if {
	input.request.subject_count <= purpose.bulk_threshold
	input.context.requests_today < purpose.daily_limit_per_system
	in_office_hours
} else := [r | request_escalate != set(); some r in sort_reasons(request_escalate)]

# Rule 8: the escalation decision for exactly this request, while it is valid, under its holder's name
# (it counts for that holder only). A decision whose obligations are malformed is no valid decision, nor one
# without an id (a decision applied must be named, and every category it leaves out gets a reason citing
# it) or whose categories are no list (what it permits must be stated, not guessed).
escalation_decisions := {d.holder: d |
	input.context.escalation_decision.request_fingerprint == input.request_fingerprint
	d := input.context.escalation_decision
	is_string(d.holder)
	_nonempty(d.id)
	is_array(d.permitted_categories)
	time.parse_rfc3339_ns(d.valid_until) > requested_ns
	_well_formed_obligations(object.get(d, "obligations", {}))
}

# An escalation decision's obligations: an object with, each optionally, `retain_until` a date
# (YYYY-MM-DD), `results_only` a boolean and `onward_sharing` false. Other keys are ignored.
_well_formed_obligations(o) if {
	is_object(o)
	_date_or_absent(object.get(o, "retain_until", null))
	_boolean_or_absent(object.get(o, "results_only", null))
	object.get(o, "onward_sharing", false) == false
}

_date_or_absent(null) := true

_date_or_absent(value) if {
	is_string(value)
	regex.match(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`, value)
}

_boolean_or_absent(null) := true

_boolean_or_absent(value) if is_boolean(value)

# Reasons ordered by code, then category: sorted as [key, reason] pairs (one sort, no quadratic lookup).
sort_reasons(reasons) := [pair[1] | some pair in sort([[concat(":", [r.code, object.get(r, "category", "")]), r] | some r in reasons])]
