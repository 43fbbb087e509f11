# The version of the WGS policy set; every decision carries it. Bump on any rule change.
package wgs.version

import rego.v1

policy_version := "wgs-policy-2026.12.1"
