"""The partnership register: partnerships, purposes, participants and categories, as versioned data."""
