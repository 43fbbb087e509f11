# The version of the WGS policy set; every decision carries it. Bump on any rule change.
package wgs.version

import rego.v1

policy_version := "wgs-policy-2026.12.7"

# The SHA-256 of the other policy files (not the tests), as tests/unit/policy/test_policy_version.py
# computes it: that test fails when a rule changes and this digest does not. Then bump policy_version and
# set this digest, never one without the other: a decision's policy_version names one set of rules.
policies_sha256 := "abbcd888a0a1eb0b90ae9a5c43512239722e83add2faaee6a4769e6e4fadb861"
