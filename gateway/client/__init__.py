"""The partner-side SDK of the WGS gateway.

Partners (and the simulated partner systems in ``connectors/``) use this package, and only this package, to
talk the gateway's formats: they make **polymorphic pseudonyms** of identifiers under the gateway's public key
and open the encrypted pseudonyms the gateway returns (:mod:`gateway.client.pseudonyms`), and they encode
records as **CLK Bloom filters** with the partnership's secret for fuzzy matching
(:mod:`gateway.client.matching`). Identifiers and plaintext records never leave the partner.

Everything here runs on the partner's machine. It imports nothing from the gateway's server side — only
``gateway.client.*`` and the pure modules ``gateway.pseudonyms.{identifiers,pep,errors}`` and
``gateway.matching.{schema,encoding,errors,plausibility}`` (checked by a unit test).
"""
