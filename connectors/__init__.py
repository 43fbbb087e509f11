"""The partner side: the connector protocol and HTTP client the gateway uses to reach holders, and the
simulated partner systems (police, Belastingdienst, KvK, municipality, FIOD, a bank, OM), each a real HTTP
service with its own database of synthetic data.

This package may import only ``gateway.client`` from the gateway (import-linter contract).
"""
