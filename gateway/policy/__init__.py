"""Policy decisions: one interface, two real Rego engines (embedded regorus; OPA server)."""
