"""The register's controlled vocabulary of data categories, re-declared on the partner side.

Why a copy: ``connectors`` may not import ``gateway.register`` (import-linter contract), because a partner
system runs on the partner's premises and knows the vocabulary, not the gateway's internals. A unit test
keeps this list equal to the categories of the shipped register, so the copy cannot drift.
"""

from __future__ import annotations

from typing import Final

IDENTITY: Final = "identity"
ADDRESS: Final = "address"
COMPANY_REGISTRATION: Final = "company_registration"
DIRECTORSHIPS: Final = "directorships"
TAX_DEBTS: Final = "tax_debts"
TAX_COMPLIANCE: Final = "tax_compliance"
INCOME: Final = "income"
ASSETS: Final = "assets"
BANK_ACCOUNTS: Final = "bank_accounts"
FLAGGED_TRANSACTIONS: Final = "flagged_transactions"
POLICE_INCIDENTS: Final = "police_incidents"
CRIMINAL_INTELLIGENCE: Final = "criminal_intelligence"
CONVICTIONS: Final = "convictions"
ONGOING_INVESTIGATION: Final = "ongoing_investigation"
PERMITS: Final = "permits"
BIBOB_FILES: Final = "bibob_files"
CARE_INVOLVEMENT: Final = "care_involvement"
SCHOOL_ABSENCE: Final = "school_absence"

ALL_CATEGORIES: Final = frozenset({
    IDENTITY, ADDRESS, COMPANY_REGISTRATION, DIRECTORSHIPS, TAX_DEBTS, TAX_COMPLIANCE, INCOME, ASSETS,
    BANK_ACCOUNTS, FLAGGED_TRANSACTIONS, POLICE_INCIDENTS, CRIMINAL_INTELLIGENCE, CONVICTIONS,
    ONGOING_INVESTIGATION, PERMITS, BIBOB_FILES, CARE_INVOLVEMENT, SCHOOL_ABSENCE,
})
