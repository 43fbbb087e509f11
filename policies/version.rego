# The version of the WGS policy set; every decision carries it. Bump on any rule change.
package wgs.version

import rego.v1

policy_version := "wgs-policy-2026.12.9"

# The SHA-256 of the other policy files (not the tests), as tests/unit/policy/test_policy_version.py
# computes it: that test fails when a rule changes and this digest does not. Then bump policy_version and
# set this digest, never one without the other: a decision's policy_version names one set of rules.
policies_sha256 := "da558f51acce8623689eaa7df1c12b629cd86d39ccc5bdb2e4ff7d861518796c"
