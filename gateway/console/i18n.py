"""Dutch and English labels: one small catalogue, and the choice of language per request.

The language is ``?lang=nl|en`` (remembered in a cookie), else the cookie, else the first supported language
of ``Accept-Language``, else the configured default. A key missing from the catalogue is a bug: the lookup
raises, and the test that renders every page catches it.
"""

from __future__ import annotations

from fastapi import Request

LANGUAGES = ("nl", "en")
LANGUAGE_COOKIE = "wgs_console_lang"

# key: (English, Dutch)
MESSAGES: dict[str, tuple[str, str]] = {
    "app_title": ("WGS gateway console", "Console WGS-gateway"),
    "skip_to_content": ("Skip to content", "Naar de inhoud"),
    "main_navigation": ("Main navigation", "Hoofdnavigatie"),
    "language": ("Language", "Taal"),
    "signed_in_as": ("Signed in as {user} ({organisation})", "Aangemeld als {user} ({organisation})"),
    "sign_in": ("Sign in", "Aanmelden"),
    "sign_out": ("Sign out", "Afmelden"),
    "username": ("Username", "Gebruikersnaam"),
    "password": ("Password", "Wachtwoord"),
    "sign_in_intro": ("Sign in with the account your administrator created for you.",
                      "Meld u aan met het account dat uw beheerder voor u heeft aangemaakt."),
    "wrong_credentials": ("Username or password is wrong, or the account is disabled.",
                          "Gebruikersnaam of wachtwoord is onjuist, of het account is uitgeschakeld."),
    "throttled": ("Too many failed attempts. Try again later.",
                  "Te veel mislukte pogingen. Probeer het later opnieuw."),
    "session_expired": ("Your session has expired. Please sign in again.",
                        "Uw sessie is verlopen. Meld u opnieuw aan."),
    "signed_out": ("You have been signed out.", "U bent afgemeld."),
    "csrf_failed": ("The form has expired or did not come from this console. Reload the page and try again.",
                    "Het formulier is verlopen of kwam niet van deze console. Laad de pagina opnieuw."),
    "audit_unavailable": ("The audit log cannot be written; nothing was done.",
                          "Het auditlog kan niet worden geschreven; er is niets gedaan."),
    # navigation
    "nav_audit": ("Audit log", "Auditlog"),
    "nav_statistics": ("Statistics", "Statistieken"),
    "nav_escalations": ("Escalations", "Escalaties"),
    "nav_legal_gaps": ("Legal gaps", "Juridische knelpunten"),
    "nav_register": ("Register", "Register"),
    "nav_subjects": ("Data-subject requests", "Inzageverzoeken"),
    "coming_soon": ("coming soon", "binnenkort"),
    # errors
    "error": ("Error", "Fout"),
    "error_403": ("You may not see this page.", "U mag deze pagina niet zien."),
    "error_404": ("Not found.", "Niet gevonden."),
    "error_422": ("The input is not valid.", "De invoer is ongeldig."),
    "error_other": ("Something went wrong; nothing was disclosed.", "Er ging iets mis; er is niets verstrekt."),
    "back_home": ("Back to the console", "Terug naar de console"),
    # audit explorer
    "audit_title": ("Audit log", "Auditlog"),
    "audit_intro": ("Entries you are entitled to see, oldest first.",
                    "Logregels die u mag inzien, oudste eerst."),
    "filters": ("Filters", "Filters"),
    "apply_filters": ("Apply filters", "Filters toepassen"),
    "clear_filters": ("Clear", "Wissen"),
    "any": ("any", "alle"),
    "partnership": ("Partnership", "Samenwerkingsverband"),
    "purpose": ("Purpose", "Doel"),
    "organisation": ("Organisation", "Organisatie"),
    "event_type": ("Event type", "Soort gebeurtenis"),
    "decision": ("Decision", "Besluit"),
    "since": ("From (date)", "Vanaf (datum)"),
    "until": ("Until (date, exclusive)", "Tot (datum, exclusief)"),
    "subject_pseudonym": ("Subject pseudonym", "Pseudoniem betrokkene"),
    "index": ("Index", "Index"),
    "recorded_at": ("Recorded (UTC)", "Vastgelegd (UTC)"),
    "requester": ("Requester", "Verzoeker"),
    "holder": ("Holder", "Verstrekker"),
    "details": ("Details", "Details"),
    "open_entry": ("Open entry {index}", "Open logregel {index}"),
    "no_entries": ("No entries match.", "Geen logregels gevonden."),
    "next_page": ("Next page", "Volgende pagina"),
    "first_page": ("First page", "Eerste pagina"),
    "entries_table_caption": ("Audit entries", "Logregels"),
    # integrity
    "integrity_title": ("Log integrity", "Integriteit van het log"),
    "log_size": ("Entries in the log", "Logregels in het log"),
    "checkpoint_size": ("Latest signed checkpoint covers", "Laatste ondertekende checkpoint omvat"),
    "checkpoint_age": ("Checkpoint age", "Leeftijd checkpoint"),
    "checkpoint_issued": ("Checkpoint issued (UTC)", "Checkpoint uitgegeven (UTC)"),
    "checkpoint_signature": ("Checkpoint signature", "Handtekening checkpoint"),
    "signature_valid": ("valid (checked by the gateway)", "geldig (gecontroleerd door de gateway)"),
    "signature_invalid": ("INVALID", "ONGELDIG"),
    "uncovered": ("Entries not yet under a checkpoint", "Logregels nog niet onder een checkpoint"),
    "no_checkpoint": ("No checkpoint yet (empty log).", "Nog geen checkpoint (leeg log)."),
    "seconds": ("{n} s", "{n} s"),
    "verifier_key": ("Verifier key (pin it)", "Verificatiesleutel (leg deze vast)"),
    "verify_offline": ("Verify the whole log offline with `wgs-gateway audit export` and `audit verify`.",
                       "Controleer het hele log offline met `wgs-gateway audit export` en `audit verify`."),
    # entry detail
    "entry_title": ("Audit entry {index}", "Logregel {index}"),
    "entry_canonical": ("Canonical entry (RFC 8785)", "Canonieke logregel (RFC 8785)"),
    "proof_title": ("Inclusion proof", "Inclusiebewijs"),
    "proof_intro": ("Your browser recomputes the leaf hash from the entry, folds the RFC 9162 inclusion proof "
                    "into a root hash and compares it with the root in the signed checkpoint.",
                    "Uw browser berekent de bladhash uit de logregel, vouwt het RFC 9162-inclusiebewijs tot "
                    "een roothash en vergelijkt die met de root in het ondertekende checkpoint."),
    "proof_checking": ("Checking the proof in your browser…", "Het bewijs wordt in uw browser gecontroleerd…"),
    "proof_verified": ("Proof verified", "Bewijs geverifieerd"),
    "proof_failed": ("Proof NOT verified", "Bewijs NIET geverifieerd"),
    "proof_no_js": ("Enable JavaScript to check the proof in the page, or check it offline.",
                    "Zet JavaScript aan om het bewijs in de pagina te controleren, of controleer het offline."),
    "sig_browser_ok": ("Checkpoint signature verified in your browser (Ed25519).",
                       "Handtekening van het checkpoint in uw browser geverifieerd (Ed25519)."),
    "sig_browser_bad": ("Checkpoint signature does NOT verify.", "Handtekening van het checkpoint is ONGELDIG."),
    "sig_browser_unsupported": ("This browser cannot check Ed25519 signatures; the gateway checked it.",
                                "Deze browser kan Ed25519 niet controleren; de gateway heeft dat gedaan."),
    "leaf_hash": ("Leaf hash", "Bladhash"),
    "tree_size": ("Tree size", "Boomgrootte"),
    "proof_hashes": ("Proof hashes", "Bewijshashes"),
    "root_hash": ("Root hash (checkpoint)", "Roothash (checkpoint)"),
    "signed_checkpoint": ("Signed checkpoint", "Ondertekend checkpoint"),
    "back_to_log": ("Back to the audit log", "Terug naar het auditlog"),
    # statistics
    "statistics_title": ("Statistics", "Statistieken"),
    "statistics_intro": ("Requests and outcomes within your scope, per partnership, purpose, participant and "
                         "month.", "Verzoeken en uitkomsten binnen uw bereik, per samenwerkingsverband, doel, "
                         "deelnemer en maand."),
    "download_csv": ("Download as CSV", "Download als CSV"),
    "participant": ("Participant", "Deelnemer"),
    "month": ("Month", "Maand"),
    "requests": ("Requests", "Verzoeken"),
    "allows": ("Allowed", "Toegestaan"),
    "narrowings": ("Narrowed", "Beperkt"),
    "denials": ("Denied", "Geweigerd"),
    "escalations": ("Escalated", "Geëscaleerd"),
    "refusals": ("Refused by holder", "Geweigerd door verstrekker"),
    "no_statistics": ("No requests within your scope.", "Geen verzoeken binnen uw bereik."),
    "chart_by": ("Outcomes per {dimension}", "Uitkomsten per {dimension}"),
    "statistics_table_caption": ("Figures per group", "Cijfers per groep"),
    "anomalies_title": ("Anomaly flags", "Afwijkingen"),
    "anomalies_intro": ("Systems or users whose volume, denial rate or out-of-hours share today departs from "
                        "their own baseline.", "Systemen of gebruikers van wie het volume, het aandeel "
                        "weigeringen of het aandeel buiten kantoortijd vandaag afwijkt van hun eigen basislijn."),
    "no_anomalies": ("No anomalies flagged.", "Geen afwijkingen gesignaleerd."),
    "actor": ("Actor", "Actor"),
    "day": ("Day", "Dag"),
    "metric": ("Metric", "Maatstaf"),
    "observed": ("Observed", "Waargenomen"),
    "baseline": ("Baseline", "Basislijn"),
    "drill_down": ("Show entries", "Toon logregels"),
    # register
    "register_title": ("Partnership register", "Register van samenwerkingsverbanden"),
    "register_version": ("Version {version} in force, SHA-256 {digest}",
                         "Versie {version} van kracht, SHA-256 {digest}"),
    "status": ("Status", "Status"),
    "established": ("Established", "Ingesteld"),
    "goal": ("Goal", "Doel van het verband"),
    "coordinating_officer": ("Coordinating privacy officer", "Coördinerend privacy officer"),
    "participants": ("Participants", "Deelnemers"),
    "role": ("Role", "Rol"),
    "systems": ("Systems", "Systemen"),
    "purposes": ("Purposes", "Doelen"),
    "legal_basis": ("Legal basis", "Grondslag"),
    "requesters": ("May request", "Mag verzoeken"),
    "supplies": ("Supplies", "Levert"),
    "receives": ("May receive", "Mag ontvangen"),
    "retention": ("Retention", "Bewaartermijn"),
    "months_from": ("{months} months from {counted_from}", "{months} maanden vanaf {counted_from}"),
    "categories": ("Categories", "Categorieën"),
    "category": ("Category", "Categorie"),
    "description": ("Description", "Omschrijving"),
    "never_shared": ("Never shared", "Nooit verstrekt"),
    "hit_only": ("Hit/no-hit only", "Alleen hit/no-hit"),
    "yes": ("yes", "ja"),
    "no": ("no", "nee"),
    "version_history": ("Version history", "Versiegeschiedenis"),
    "version": ("Version", "Versie"),
    "source": ("Source", "Bron"),
    "loaded_at": ("Loaded (UTC)", "Geladen (UTC)"),
    # subject requests
    "subjects_title": ("Data-subject request", "Inzageverzoek betrokkene"),
    "subjects_intro": ("Every disclosure about one subject in the partnerships your organisation takes part "
                       "in. Enter the subject's pseudonym in the partnership domain; it is not written to the "
                       "audit log.", "Alle verstrekkingen over één betrokkene in de samenwerkingsverbanden "
                       "waaraan uw organisatie deelneemt. Voer het pseudoniem in het domein van het verband in; "
                       "het wordt niet in het auditlog vastgelegd."),
    "look_up": ("Look up disclosures", "Verstrekkingen opzoeken"),
    "disclosures_found": ("{n} disclosure(s) found.", "{n} verstrekking(en) gevonden."),
    "invalid_pseudonym": ("That is not a pseudonym (letters, digits and + / = _ : . - only).",
                          "Dat is geen pseudoniem (alleen letters, cijfers en + / = _ : . -)."),
    "disclosures_caption": ("Disclosures about the subject", "Verstrekkingen over de betrokkene"),
}


def translate(language: str, key: str, **values: object) -> str:
    english, dutch = MESSAGES[key]
    text = dutch if language == "nl" else english
    return text.format(**values) if values else text


def _from_accept_language(header: str) -> str | None:
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            weighted.append((-quality, position, primary))
    return min(weighted)[2] if weighted else None


def choose_language(request: Request, default: str) -> tuple[str, bool]:
    """The request's language, and whether it was chosen explicitly (then remember it in a cookie)."""
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        return asked, True
    remembered = request.cookies.get(LANGUAGE_COOKIE)
    if remembered in LANGUAGES:
        return remembered, False
    return _from_accept_language(request.headers.get("accept-language", "")) or default, False
