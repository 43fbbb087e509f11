# Shared facts about a request: the partnership, purpose and participants it names, and the office-hours
# rule (REGISTER.md rules 1, 2, 5 and 7). Used by wgs.exchange and wgs.discovery.
package wgs.common

import rego.v1

partnership := data.register.partnerships[input.request.partnership]

purpose := partnership.purposes[input.request.purpose]

requester := p if {
	some p in partnership.participants
	p.organisation == input.request.requester.organisation
	input.request.requester.system in p.systems
}

holder := p if {
	some p in partnership.participants
	p.organisation == input.request.holder.organisation
}

never_disclosed contains name if {
	some name, category in data.register.categories
	category.never_shared
}

never_disclosed contains name if {
	some name in partnership.never_disclosed
}

requested := {c | some c in input.request.categories}

# Rule 1: requester and holder are active participants of the active partnership; the purpose belongs to it.
deny contains {"code": "unknown-partnership", "message": sprintf("partnership `%s` is not in the register", [input.request.partnership])} if {
	not data.register.partnerships[input.request.partnership]
}

deny contains {"code": "partnership-retired", "message": sprintf("partnership `%s` is %s: it denies everything", [input.request.partnership, partnership.status])} if {
	partnership.status != "active"
}

deny contains {"code": "purpose-not-in-partnership", "message": sprintf("purpose `%s` does not belong to `%s`", [input.request.purpose, input.request.partnership])} if {
	partnership
	not partnership.purposes[input.request.purpose]
}

deny contains {"code": "requester-not-participant", "message": sprintf("`%s` (system `%s`) is not a participant of `%s`", [input.request.requester.organisation, input.request.requester.system, input.request.partnership])} if {
	partnership
	not requester
}

deny contains {"code": "requester-retired", "message": "the requester's participation is retired"} if {
	requester.status != "active"
}

deny contains {"code": "holder-not-participant", "message": sprintf("`%s` is not a participant of `%s`", [input.request.holder.organisation, input.request.partnership])} if {
	partnership
	not holder
}

deny contains {"code": "holder-retired", "message": "the holder's participation is retired"} if {
	holder.status != "active"
}

deny contains {"code": "requester-role-not-allowed", "message": sprintf("role `%s` may not request for `%s`", [requester.role, input.request.purpose])} if {
	purpose
	not requester.role in purpose.requesters
}

# Rule 2: legal basis, signal and case reference.
deny contains {"code": "legal-basis-mismatch", "message": sprintf("legal basis must be `%s` for `%s`", [purpose.legal_basis, input.request.purpose])} if {
	input.request.legal_basis != purpose.legal_basis
}

deny contains {"code": "signal-missing", "message": "a signal (type and reference) is required"} if {
	not _has_signal
}

deny contains {"code": "case-reference-missing", "message": "a case reference is required"} if {
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

# Rule 5: minors only where the purpose allows them.
deny contains {"code": "minors-not-allowed", "message": sprintf("purpose `%s` does not allow data about minors", [input.request.purpose])} if {
	input.request.subjects_minor == true
	not purpose.minors_allowed
}

# Rule 7: office hours, Mon-Fri 07:00-19:00 in the register's time zone (DST handled by the time zone).
_requested_ns := time.parse_rfc3339_ns(input.request.requested_at)

_weekday_numbers := {"Monday": 1, "Tuesday": 2, "Wednesday": 3, "Thursday": 4, "Friday": 5, "Saturday": 6, "Sunday": 7}

# "HH:MM" -> minutes since midnight (digit by digit: leading zeros are not JSON numbers).
_digit(text, position) := indexof("0123456789", substring(text, position, 1))

_minutes(hhmm) := ((((_digit(hhmm, 0) * 10) + _digit(hhmm, 1)) * 60) + (_digit(hhmm, 3) * 10)) + _digit(hhmm, 4)

in_office_hours if {
	hours := data.register.office_hours
	_weekday_numbers[time.weekday([_requested_ns, hours.timezone])] in hours.weekdays
	clock := time.clock([_requested_ns, hours.timezone])
	minute := (clock[0] * 60) + clock[1]
	minute >= _minutes(hours.start)
	minute < _minutes(hours.end)
}

# Rule 9: retain-until date from the purpose's retention.
retain_until := sprintf("%04d-%02d-%02d", time.date(time.add_date(_requested_ns, 0, purpose.retention.months, 0)))
