"""The escalation workflow's HTTP surface, permissions, notifications and scheduler (issue 6)."""
