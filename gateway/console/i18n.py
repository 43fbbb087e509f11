"""Dutch and English labels: one small catalogue, and the choice of language per request.

The language is ``?lang=nl|en`` (remembered in a cookie), else the cookie, else the first supported language
of ``Accept-Language``, else the configured default. A key missing from the catalogue is a bug: the lookup
raises, and the test that renders every page catches it.

Refusals are worded by their code (``refusal.<code>``: :class:`gateway.errors.GatewayError`), never by
matching a service's English text, and a field's complaint by pydantic's error type (``validation.<type>``).
"""

from __future__ import annotations

from collections.abc import Mapping

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
    "unknown_role": ("This account has a role the gateway does not know. Ask your administrator to correct it.",
                     "Dit account heeft een rol die de gateway niet kent. Vraag uw beheerder dit te herstellen."),
    "throttled": ("Too many failed attempts. Try again later.",
                  "Te veel mislukte pogingen. Probeer het later opnieuw."),
    "session_expired": ("Your session has expired. Please sign in again.",
                        "Uw sessie is verlopen. Meld u opnieuw aan."),
    "signed_out": ("You have been signed out.", "U bent afgemeld."),
    "sign_in_form_expired": ("This sign-in form was open too long and has expired. Please sign in again.",
                             "Dit aanmeldformulier stond te lang open en is verlopen. Meld u opnieuw aan."),
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
    "error_405": ("This address does not take this kind of request.",
                  "Dit adres accepteert dit soort verzoek niet."),
    "error_422": ("The input is not valid.", "De invoer is ongeldig."),
    "error_413": ("What was sent is too large; nothing of it was saved.",
                  "Wat werd verstuurd is te groot; er is niets van opgeslagen."),
    "error_429": ("Too many requests in a short time: wait a moment, then try again.",
                  "Te veel verzoeken in korte tijd: wacht even en probeer het dan opnieuw."),
    "field_invalid": ("{field}: invalid.", "{field}: ongeldig."),
    # what pydantic found wrong with a field, by its error type (validation_text); others are "invalid"
    "validation.missing": ("{field}: required.", "{field}: verplicht."),
    "validation.string_too_long": ("{field}: at most {max_length} characters.",
                                   "{field}: ten hoogste {max_length} tekens."),
    "validation.string_too_short": ("{field}: at least {min_length} characters.",
                                    "{field}: minstens {min_length} tekens."),
    "validation.too_long": ("{field}: at most {max_length} items.", "{field}: ten hoogste {max_length} items."),
    "validation.string_pattern_mismatch": ("{field}: not in the expected form.", "{field}: niet in de verwachte vorm."),
    "validation.int_parsing": ("{field}: not a whole number.", "{field}: geen geheel getal."),
    "validation.less_than_equal": ("{field}: at most {le}.", "{field}: ten hoogste {le}."),
    "validation.greater_than_equal": ("{field}: at least {ge}.", "{field}: minstens {ge}."),
    "validation.less_than": ("{field}: less than {lt}.", "{field}: kleiner dan {lt}."),
    "validation.greater_than": ("{field}: more than {gt}.", "{field}: groter dan {gt}."),
    "validation.literal_error": ("{field}: not one of the choices.", "{field}: geen van de keuzes."),
    "validation.enum": ("{field}: not one of the choices.", "{field}: geen van de keuzes."),
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
    "last_verification": ("Last verification of the whole log", "Laatste controle van het hele log"),
    "never_verified": ("The log has not been verified from the console yet.",
                       "Het log is nog niet vanuit de console gecontroleerd."),
    "verified_at": ("Verified at (UTC)", "Gecontroleerd op (UTC)"),
    "verification_result": ("Result", "Uitkomst"),
    "verification_ok": ("intact", "intact"),
    "verification_failed": ("NOT intact", "NIET intact"),
    "verification_failed_at": ("First failure", "Eerste fout"),
    "failure_index": ("at index {index}", "bij index {index}"),
    "failure_range": ("somewhere in indices {index}..{last}", "ergens in indices {index}..{last}"),
    "verified_entries": ("Entries verified", "Gecontroleerde logregels"),
    "verified_checkpoints": ("Checkpoints verified", "Gecontroleerde checkpoints"),
    "verified_root": ("Root hash", "Roothash"),
    "verify_now": ("Verify the log now", "Controleer het log nu"),
    "verify_now_help": ("Recomputes the Merkle tree from every entry and checks every checkpoint signature and "
                        "their consistency; the run is recorded in the log.",
                        "Berekent de Merkle-boom opnieuw uit alle logregels en controleert alle handtekeningen "
                        "van checkpoints en hun consistentie; de controle wordt in het log vastgelegd."),
    "verification_done": ("The log has been verified; the result is below.",
                          "Het log is gecontroleerd; de uitkomst staat hieronder."),
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
    "counted_from.disclosure": ("disclosure", "verstrekking"),
    "counted_from.case-closure": ("case closure", "sluiting van de zaak"),
    "register_status.active": ("active", "actief"),
    "metric.volume": ("request volume", "aantal verzoeken"),
    "metric.denial-rate": ("denial rate", "aandeel weigeringen"),
    "metric.out-of-hours": ("share out of office hours", "aandeel buiten kantoortijd"),
    "register_status.retired": ("retired", "beëindigd"),
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
    # escalations: queue
    "escalations_title": ("Escalations", "Escalaties"),
    "escalations_intro": ("Disputed requests you may see, per tier. Deadlines are counted in Dutch working days "
                          "and shown as of the gateway's date ({today}).",
                          "Betwiste verzoeken die u mag zien, per niveau. Termijnen tellen in Nederlandse "
                          "werkdagen en zijn berekend op de datum van de gateway ({today})."),
    "awaiting_title": ("Awaiting your organisation", "Wacht op uw organisatie"),
    "awaiting_none": ("Nothing awaits your organisation.", "Er wacht niets op uw organisatie."),
    "awaiting.decision": ("decision", "besluit"),
    "awaiting.rerun": ("re-run by your system", "opnieuw uitvoeren door uw systeem"),
    "state": ("State", "Stand"),
    "tier": ("Tier", "Niveau"),
    "tier_n": ("tier {n}", "niveau {n}"),
    "metrics_title": ("Metrics", "Kengetallen"),
    "metrics_intro": ("Of the {cases} cases you may see:", "Van de {cases} zaken die u mag zien:"),
    "metrics_past_deadline_total": ("{n} open past their deadline.", "{n} open na hun termijn."),
    "metrics_caption": ("Time to decision per tier (hours, from opening to decision) and open cases past "
                        "their deadline", "Doorlooptijd tot besluit per niveau (uren, van opening tot besluit) "
                        "en open zaken na hun termijn"),
    "metrics_decided": ("Decided", "Besloten"),
    "metrics_mean": ("Mean (h)", "Gemiddeld (u)"),
    "metrics_median": ("Median (h)", "Mediaan (u)"),
    "metrics_max": ("Longest (h)", "Langste (u)"),
    "metrics_past_deadline": ("Open past deadline", "Open na termijn"),
    "tier_queue.1": ("Tier 1 — privacy officers of both organisations",
                     "Niveau 1 — privacy officers van beide organisaties"),
    "tier_queue.2": ("Tier 2 — legal desk / data-sharing taskforce",
                     "Niveau 2 — juridisch loket / taskforce gegevensdeling"),
    "tier_queue.3": ("Tier 3 — steering group (administrative)", "Niveau 3 — stuurgroep (bestuurlijk)"),
    "overdue_only": ("Overdue only", "Alleen over de termijn"),
    "cases_caption": ("Cases at tier {n}, most urgent first", "Zaken op niveau {n}, meest urgent eerst"),
    "case": ("Case", "Zaak"),
    "trigger": ("Reason for the case", "Aanleiding"),
    "deadline": ("Deadline", "Termijn"),
    "open_case": ("Open case {id}", "Open zaak {id}"),
    "legal_gap_tag": ("legal gap", "juridisch knelpunt"),
    "no_cases": ("No cases.", "Geen zaken."),
    "overdue_by": ("Overdue by {n} day(s)", "{n} dag(en) over de termijn"),
    "due_today": ("Due today", "Verloopt vandaag"),
    "days_left": ("{n} day(s) left", "nog {n} dag(en)"),
    "working_days_left": ("{n} working day(s)", "{n} werkdag(en)"),
    "state.open": ("open", "open"),
    "state.in_review": ("in review", "in behandeling"),
    "state.escalated": ("escalated", "opgeschaald"),
    "state.decided": ("decided", "besloten"),
    "state.closed": ("closed", "gesloten"),
    "state.withdrawn": ("withdrawn", "ingetrokken"),
    "state.expired": ("expired", "verlopen"),
    "trigger.policy-escalated": ("policy escalated", "beleid escaleerde"),
    "trigger.holder-refused": ("holder refused", "verstrekker weigerde"),
    "trigger.requester-objection": ("requester objects", "bezwaar van verzoeker"),
    "trigger.holder-objection": ("holder objects", "bezwaar van verstrekker"),
    # escalations: case page
    "case_title": ("Case {id}", "Zaak {id}"),
    "back_to_queue": ("Back to the escalations", "Terug naar de escalaties"),
    "done.decision": ("Your decision was recorded.", "Uw besluit is vastgelegd."),
    "done.vote": ("Your vote was recorded; the decision is taken when enough deciders agree on the same text.",
                  "Uw stem is vastgelegd; het besluit valt zodra genoeg beslissers met dezelfde tekst instemmen."),
    "done.refer": ("The case was referred up to the next tier.", "De zaak is voorgelegd aan het volgende niveau."),
    "done.review": ("The case is in review.", "De zaak is in behandeling genomen."),
    "done.comment": ("Your comment was added.", "Uw opmerking is toegevoegd."),
    "done.withdraw": ("The case was withdrawn.", "De zaak is ingetrokken."),
    "done.gap": ("The case was flagged as a legal gap.", "De zaak is gemarkeerd als juridisch knelpunt."),
    "done.status": ("The status of the legal gap was changed.", "De status van het juridisch knelpunt is gewijzigd."),
    "request_summary": ("The disputed request", "Het betwiste verzoek"),
    "policy_reasons": ("Policy reasons", "Redenen van het beleid"),
    "requested_categories": ("Requested categories", "Gevraagde categorieën"),
    "opened_at": ("Opened (UTC)", "Geopend (UTC)"),
    "exchange_ref": ("Exchange reference", "Referentie uitwisseling"),
    "register_version_label": ("Register version", "Registerversie"),
    "deciders": ("Deciding organisations at this tier", "Beslissende organisaties op dit niveau"),
    "pending_votes": ("Votes so far", "Stemmen tot nu toe"),
    "legal_gap_flagged": ("Flagged as a legal gap", "Gemarkeerd als juridisch knelpunt"),
    "decision_taken": ("Decision", "Besluit"),
    "outcome": ("Outcome", "Uitkomst"),
    "outcome.allow": ("allow", "toestaan"),
    "outcome.deny": ("deny", "weigeren"),
    "outcome.refer-up": ("refer up to the next tier", "voorleggen aan het volgende niveau"),
    "permitted_categories": ("Permitted categories", "Toegestane categorieën"),
    "extra_obligations": ("Extra obligations", "Extra verplichtingen"),
    "decision_id": ("Decision id", "Besluitnummer"),
    "decision_id_hint": ("the requesting system cites it to re-run the request",
                         "het verzoekende systeem noemt dit om het verzoek opnieuw uit te voeren"),
    "valid_until": ("Valid until", "Geldig tot"),
    "decided_by": ("Decided by", "Besloten door"),
    "decided_at": ("Decided at", "Besloten op"),
    "motivation": ("Motivation", "Motivering"),
    "work_on_case": ("Work on the case", "De zaak behandelen"),
    "start_review": ("Take into review", "In behandeling nemen"),
    "start_review_hint": ("Tells the other parties that tier {n} is working on it.",
                          "Laat de andere partijen weten dat niveau {n} ermee bezig is."),
    "decision_form": ("Decide", "Besluiten"),
    "four_eyes_own": ("Your organisation made the request: four eyes forbid it to allow or deny it; you may "
                      "refer it up.", "Uw organisatie deed het verzoek: het vier-ogenprincipe verbiedt u het toe "
                      "te staan of te weigeren; u kunt het wel voorleggen aan het volgende niveau."),
    "four_eyes_last_tier": ("Your organisation made the request: four eyes forbid it to allow or deny it, and tier "
                            "{n} is the last: there is no tier to refer it to.",
                            "Uw organisatie deed het verzoek: het vier-ogenprincipe verbiedt u het toe te staan of "
                            "te weigeren, en niveau {n} is het laatste: er is geen niveau om het aan voor te leggen."),
    "both_parties": ("A holder's objection is not decided by one party alone: at tier 1 your vote takes effect "
                     "when the other organisation's privacy officer votes the same.",
                     "Over een bezwaar van de verstrekker beslist geen partij alleen: op niveau 1 geldt uw stem "
                     "pas als de privacy officer van de andere organisatie hetzelfde stemt."),
    "narrow_hint": ("For an allow: untick the categories the holder must not supply.",
                    "Bij toestaan: vink de categorieën uit die de verstrekker niet mag leveren."),
    "required_min": ("required, at least {n} characters", "verplicht, minstens {n} tekens"),
    "retain_until": ("Delete by (earlier than the purpose's retention)",
                     "Verwijderen uiterlijk op (eerder dan de bewaartermijn van het doel)"),
    "results_only": ("Only results may leave the partnership", "Alleen resultaten mogen het verband verlaten"),
    "obligation_retain_until": ("Delete by {date}", "Verwijderen uiterlijk op {date}"),
    "submit_decision": ("Record decision", "Besluit vastleggen"),
    "tier_lapsed": ("The deadline of tier {n} has passed: the case goes to the next tier, and this tier can only "
                    "refer it up.", "De termijn van niveau {n} is verstreken: de zaak gaat naar het volgende niveau; "
                    "dit niveau kan haar alleen nog voorleggen."),
    "not_decider": ("Tier {n} is decided by: {deciders}. Your organisation does not decide at this tier.",
                    "Op niveau {n} beslissen: {deciders}. Uw organisatie beslist niet op dit niveau."),
    "withdraw_title": ("Withdraw the case", "De zaak intrekken"),
    "withdraw": ("Withdraw", "Intrekken"),
    "legal_gap": ("Legal gap", "Juridisch knelpunt"),
    "flag_gap": ("Flag as a legal gap", "Markeren als juridisch knelpunt"),
    "flag_gap_hint": ("Link the case to a known gap of the partnership, or describe the missing or unclear legal "
                      "basis.", "Koppel de zaak aan een bekend knelpunt van het verband, of beschrijf de "
                      "ontbrekende of onduidelijke grondslag."),
    "existing_gap": ("Known gap", "Bekend knelpunt"),
    "new_gap": ("a new gap (describe it below)", "een nieuw knelpunt (beschrijf het hieronder)"),
    "gap_title": ("Title", "Titel"),
    "gap_description": ("Missing or unclear basis", "Ontbrekende of onduidelijke grondslag"),
    "flag_gap_button": ("Flag", "Markeren"),
    "history": ("History", "Verloop"),
    "history_caption": ("Every step of the case, oldest first", "Elke stap in de zaak, oudste eerst"),
    "when": ("When (UTC)", "Wanneer (UTC)"),
    "step": ("Step", "Stap"),
    "by": ("By", "Door"),
    "the_gateway": ("the gateway", "de gateway"),
    "step.opened": ("opened", "geopend"),
    "step.start_review": ("taken into review", "in behandeling genomen"),
    "step.decide": ("decided", "besloten"),
    "step.vote": ("voted", "gestemd"),
    "step.refer_up": ("referred up", "voorgelegd aan volgend niveau"),
    "step.deadline_missed": ("deadline missed: moved up", "termijn verstreken: opgeschaald"),
    "step.withdraw": ("withdrawn", "ingetrokken"),
    "step.close": ("closed", "gesloten"),
    "step.final_deadline_missed": ("deadline of the last tier missed: reported",
                                   "termijn van het laatste niveau verstreken: gemeld"),
    "step.expire": ("decision expired unused", "besluit ongebruikt verlopen"),
    "step.decision_refused_by_holder": ("re-run refused by the holder despite the decision",
                                        "herhaling door de houder geweigerd ondanks het besluit"),
    "step.decision_holder_unavailable": ("re-run: holder unavailable, decision not applied",
                                         "herhaling: houder onbereikbaar, besluit niet toegepast"),
    "comments": ("Comments", "Opmerkingen"),
    "no_comments": ("No comments yet.", "Nog geen opmerkingen."),
    "add_comment": ("Add comment", "Opmerking toevoegen"),
    "comments_closed": ("This case has ended and takes no more comments: open a new escalation or object.",
                        "Deze zaak is afgesloten en neemt geen opmerkingen meer aan: begin een nieuwe escalatie of "
                        "maak bezwaar."),
    "comment": ("Comment", "Opmerking"),
    "attachments": ("Attachments (by reference)", "Bijlagen (als verwijzing)"),
    "attachments_hint": ("A reference into your own document system (e.g. dms://…) and its title; the document "
                         "itself stays with you.", "Een verwijzing naar uw eigen documentsysteem (bijv. "
                         "dms://…) en de titel; het document zelf blijft bij u."),
    "attachment_reference": ("Reference {n}", "Verwijzing {n}"),
    "attachment_title": ("Title {n}", "Titel {n}"),
    "attachment_sha256": ("SHA-256 {n} (optional)", "SHA-256 {n} (optioneel)"),
    # escalations: refusals and form errors
    "refused_403": ("Not allowed:", "Niet toegestaan:"),
    "refused_409": ("Someone acted on this case first, or the step does not fit its state; the page shows the "
                    "case as it is now:", "Iemand anders was u voor, of de stap past niet bij de stand van de "
                    "zaak; de pagina toont de zaak zoals die nu is:"),
    "refused_422": ("Incomplete:", "Onvolledig:"),
    "draft_restored": ("What you typed here before and did not send (your session may have expired) is back. "
                       "Check it before you send it.",
                       "Wat u hier eerder typte en niet verstuurde (uw sessie kan verlopen zijn), staat er weer. "
                       "Controleer het voordat u het verstuurt."),
    "unsaved_text": ("What you wrote was not saved; copy it from here:",
                     "Wat u schreef is niet opgeslagen; kopieer het hier:"),
    "motivation_required": ("Write a motivation (a decision needs at least 10 characters).",
                            "Schrijf een motivering (een besluit vraagt minstens 10 tekens)."),
    "outcome_required": ("Choose an outcome.", "Kies een uitkomst."),
    "stale_form": ("The form is out of date; reload the page.", "Het formulier is verouderd; laad de pagina opnieuw."),
    "comment_required": ("Write a comment.", "Schrijf een opmerking."),
    "attachment_invalid": ("An attachment needs a reference (letters, digits and . _ : / -), a title, and "
                           "optionally a SHA-256 of 64 hex digits.", "Een bijlage vraagt een verwijzing "
                           "(letters, cijfers en . _ : / -), een titel en eventueel een SHA-256 van 64 "
                           "hexadecimale tekens."),
    "attachments_mismatched": ("Each attachment has a reference, a title and a SHA-256 field (which may be empty); "
                               "the form sent them in different numbers, so nothing was saved. Reload the page "
                               "and add the attachments again.",
                               "Elke bijlage heeft een veld voor de verwijzing, de titel en de SHA-256 (dat leeg mag "
                               "zijn); het formulier stuurde ze in verschillende aantallen, dus er is niets "
                               "opgeslagen. Laad de pagina opnieuw en voeg de bijlagen opnieuw toe."),
    "categories_required": ("An allow names at least one permitted category.",
                            "Toestaan noemt minstens één toegestane categorie."),
    "invalid_date": ("Not a date.", "Geen datum."),
    "gap_description_required": ("A new legal gap needs a title and a description.",
                                 "Een nieuw juridisch knelpunt vraagt een titel en een omschrijving."),
    "gap_title_invalid": ("A legal gap's title is at most 200 characters of text.",
                          "De titel van een juridisch knelpunt is ten hoogste 200 tekens tekst."),
    "gap_description_invalid": ("A legal gap's description is at most 4,000 characters of text.",
                                "De omschrijving van een juridisch knelpunt is ten hoogste 4.000 tekens tekst."),
    "note_too_long": ("The note is too long.", "De notitie is te lang."),
    "status_invalid": ("Choose a status.", "Kies een status."),
    # refusals by code (gateway.errors.GatewayError.code): the console's own, and the services' it shows
    "refusal.csrf-failed": ("The form has expired or did not come from this console. Reload the page and try "
                            "again.", "Het formulier is verlopen of kwam niet van deze console. Laad de pagina "
                            "opnieuw."),
    "refusal.download-elsewhere": ("Downloads start from the console's own pages: open the page and use its "
                                   "download link.", "Downloads starten vanaf de pagina's van de console zelf: "
                                   "open de pagina en gebruik de downloadlink daar."),
    "refusal.page-elsewhere": ("This page writes to the audit log as it opens, so it opens from the console's own "
                               "pages only: go back to the console and open it there.",
                               "Deze pagina schrijft bij het openen in het auditlog en opent daarom alleen vanaf "
                               "de pagina's van de console zelf: ga terug naar de console en open haar daar."),
    "refusal.missing-scope": ("Your roles lack the scope `{scope}`.", "Uw rollen missen de bevoegdheid `{scope}`."),
    "refusal.not-a-date": ("{field}: not a date (YYYY-MM-DD).", "{field}: geen datum (JJJJ-MM-DD)."),
    "refusal.not-a-flag": ("{field}: 1 or 0.", "{field}: 1 of 0."),
    "refusal.filter-state": ("Choose a state from the list.", "Kies een stand uit de lijst."),
    "refusal.filter-tier": ("The tier is 1, 2 or 3.", "Het niveau is 1, 2 of 3."),
    "refusal.filter-gap-status": ("Choose a status from the list.", "Kies een status uit de lijst."),
    "refusal.subject-in-address": ("The subject filter is taken from the explorer's form only, never from the "
                                   "address (proxies log addresses; a pseudonym is personal data).",
                                   "Het filter op de betrokkene komt alleen uit het formulier van de verkenner, "
                                   "nooit uit het adres (proxy's leggen adressen vast; een pseudoniem is een "
                                   "persoonsgegeven)."),
    "refusal.officers-only": ("Only privacy officers review audit entries.",
                              "Alleen privacy officers bekijken logregels."),
    "refusal.verifiers-only": ("Only privacy officers verify the log from the console.",
                               "Alleen privacy officers controleren het log vanuit de console."),
    "refusal.contact-point-only": ("Only the contact point answers data-subject requests.",
                                   "Alleen het contactpunt beantwoordt inzageverzoeken."),
    "refusal.case-not-found": ("No such case.", "Deze zaak bestaat niet."),
    "refusal.case-cursor-unknown": ("This page of the list no longer exists; start again from the first page.",
                                    "Deze pagina van de lijst bestaat niet meer; begin opnieuw bij de eerste."),
    "refusal.stale-version": ("the case changed since this page was loaded; nothing was changed by you.",
                              "de zaak is gewijzigd sinds deze pagina werd geladen; u hebt niets gewijzigd."),
    "refusal.case-exists": ("an open case about this exchange and holder exists already.",
                            "er is al een open zaak over deze uitwisseling en verstrekker."),
    "refusal.decision-in-use": ("the decision is being used by another re-run, or has been used.",
                                "het besluit wordt door een andere herhaling gebruikt, of is al gebruikt."),
    "refusal.invalid-transition": ("this step does not fit the state of the case.",
                                   "deze stap past niet bij de stand van de zaak."),
    "refusal.not-active": ("the case has been settled; there is nothing to decide.",
                           "de zaak is afgehandeld; er valt niets te beslissen."),
    "refusal.case-ended": ("the case has ended and takes no more comments; open a new escalation or object.",
                           "de zaak is afgesloten en neemt geen opmerkingen meer aan; begin een nieuwe escalatie "
                           "of maak bezwaar."),
    "refusal.four-eyes": ("the decider must be outside the requesting organisation (four eyes).",
                          "wie beslist, moet buiten de verzoekende organisatie staan (vier-ogenprincipe)."),
    "refusal.four-eyes-deciders": ("a tier-{tier} decision needs {n} different deciders.",
                                   "een besluit op niveau {tier} vraagt {n} verschillende beslissers."),
    "refusal.four-eyes-parties": ("no party decides its own case alone: the deciders must include someone of the "
                                  "other party (a holder's objection, tier 1) or, above tier 1, of neither.",
                                  "geen partij beslist alleen over haar eigen zaak: onder de beslissers is iemand "
                                  "van de andere partij (bezwaar van de verstrekker, niveau 1) of, boven niveau 1, "
                                  "van geen van beide."),
    "refusal.not-decider": ("your organisation does not decide at tier {tier} of this partnership.",
                            "uw organisatie beslist niet op niveau {tier} van dit samenwerkingsverband."),
    "refusal.tier-lapsed": ("the deadline of tier {tier} has passed: the case goes to tier {next}, whose deciders "
                            "take it up; it can only be referred up.",
                            "de termijn van niveau {tier} is verstreken: de zaak gaat naar niveau {next}, waarvan "
                            "de beslissers haar oppakken; zij kan alleen nog worden voorgelegd."),
    "refusal.not-withdrawer": ("only the organisation that asked may withdraw the case.",
                               "alleen de organisatie die het verzoek deed, mag de zaak intrekken."),
    "refusal.comments-by-people": ("comments are made by people.", "opmerkingen worden door mensen gemaakt."),
    "refusal.motivation-required": ("write a motivation.", "schrijf een motivering."),
    "refusal.outcome-invalid": ("the outcome is allow or deny.", "de uitkomst is toestaan of weigeren."),
    "refusal.allow-without-categories": ("an allow names at least one permitted category.",
                                         "toestaan noemt minstens één toegestane categorie."),
    "refusal.allow-not-requested": ("an allow permits only requested categories; not requested: {categories}.",
                                    "toestaan geldt alleen gevraagde categorieën; niet gevraagd: {categories}."),
    "refusal.allow-never-disclosed": ("an allow cannot permit {categories}: never disclosed in this partnership, "
                                      "whatever a decision says.", "toestaan kan {categories} niet toestaan: "
                                      "nooit verstrekt in dit samenwerkingsverband, wat een besluit ook zegt."),
    "refusal.allow-not-disclosable": ("an allow cannot permit {categories}: the register does not let the holder "
                                      "disclose it to the requester for this purpose (rule 3), whatever a decision "
                                      "says; if it should, flag the case as a legal gap.",
                                      "toestaan kan {categories} niet toestaan: het register laat de verstrekker "
                                      "dit voor dit doel niet aan de verzoeker verstrekken (regel 3), wat een "
                                      "besluit ook zegt; als dat wel zou moeten, markeer de zaak dan als juridisch "
                                      "knelpunt."),
    "refusal.retain-until-past": ("the deletion date {date} is in the past (today is {today}).",
                                  "de verwijderdatum {date} ligt in het verleden (vandaag is {today})."),
    "refusal.retain-until-unchecked": ("the deletion date cannot be checked: the purpose is not in the register.",
                                       "de verwijderdatum kan niet worden gecontroleerd: het doel staat niet in het "
                                       "register."),
    "refusal.retain-until-too-late": ("the deletion date {date} is later than the retention of the purpose allows "
                                      "({latest} at the latest); a decision can only shorten it.",
                                      "de verwijderdatum {date} ligt later dan de bewaartermijn van het doel "
                                      "toestaat (uiterlijk {latest}); een besluit kan die alleen inkorten."),
    "refusal.personal-data-reference": ("a reference looks like personal data (a BSN, an IBAN or an e-mail "
                                        "address); use one that identifies no one; nothing was changed.",
                                        "een verwijzing lijkt op een persoonsgegeven (een BSN, een IBAN of een "
                                        "e-mailadres); gebruik er een die niemand identificeert; er is niets "
                                        "gewijzigd."),
    "refusal.gap-not-found": ("No such legal gap.", "Dit juridisch knelpunt bestaat niet."),
    "refusal.gap-description-required": ("a new legal gap needs a title and a description of the missing basis.",
                                         "een nieuw juridisch knelpunt vraagt een titel en een omschrijving van de "
                                         "ontbrekende grondslag."),
    "refusal.gap-resolved": ("the legal gap is resolved and takes no new cases; flag the case as a new gap.",
                             "het juridisch knelpunt is opgelost en neemt geen nieuwe zaken aan; markeer de zaak "
                             "als een nieuw knelpunt."),
    "refusal.gap-already-linked": ("the case is linked to this legal gap already.",
                                   "de zaak is al aan dit juridisch knelpunt gekoppeld."),
    "refusal.gap-flaggers": ("legal gaps are flagged by privacy officers and administrators.",
                             "juridische knelpunten worden gemarkeerd door privacy officers en beheerders."),
    "refusal.gap-managers": ("only the coordinating privacy officer and the tier-2/3 organisations manage gaps.",
                             "alleen de coördinerend privacy officer en de organisaties van niveau 2/3 beheren "
                             "knelpunten."),
    "refusal.gap-transition": ("the legal gap's status cannot change that way from its current status.",
                               "de status van het juridisch knelpunt kan vanuit de huidige status niet zo "
                               "veranderen."),
    "refusal.gap-stale-version": ("the legal gap changed since this page was loaded; nothing was changed by you.",
                                  "het juridisch knelpunt is gewijzigd sinds deze pagina werd geladen; u hebt "
                                  "niets gewijzigd."),
    # legal gaps
    "gaps_title": ("Legal gaps", "Juridische knelpunten"),
    "gaps_intro": ("Missing or unclear legal bases that cases brought to light, for the steering group's agenda: "
                   "identified → on the agenda → resolved.", "Ontbrekende of onduidelijke grondslagen die "
                   "zaken aan het licht brachten, voor de agenda van de stuurgroep: gesignaleerd → geagendeerd → "
                   "opgelost."),
    "gaps_caption": ("Legal gaps of your partnerships", "Juridische knelpunten van uw verbanden"),
    "download_agenda_csv": ("Download for the agenda (CSV)", "Download voor de agenda (CSV)"),
    "linked_cases": ("Cases", "Zaken"),
    "created_at": ("Recorded (UTC)", "Vastgelegd (UTC)"),
    "updated_at": ("Last change (UTC)", "Laatste wijziging (UTC)"),
    "change_status": ("Change status", "Status wijzigen"),
    "gap_note": ("Note", "Notitie"),
    "gap_history": ("Status changes and notes", "Statuswijzigingen en notities"),
    "gap_history_caption": ("Every status change of the gap with its note, oldest first",
                            "Elke statuswijziging van het knelpunt met zijn notitie, oudste eerst"),
    "gap_change": ("Change", "Wijziging"),
    "gap_history_none": ("No status change yet.", "Nog geen statuswijziging."),
    "not_recorded": ("not recorded", "niet vastgelegd"),
    "gap_move.on-agenda": ("Put on the agenda", "Agenderen"),
    "gap_move.resolved": ("Mark resolved", "Markeren als opgelost"),
    "gap_final": ("Resolved: final.", "Opgelost: definitief."),
    "gap_not_manager": ("The coordinating privacy officer and the tier-2/3 organisations change the status.",
                        "De coördinerend privacy officer en de organisaties van niveau 2/3 wijzigen de status."),
    "gap_status.identified": ("identified", "gesignaleerd"),
    "gap_status.on-agenda": ("on the agenda", "geagendeerd"),
    "gap_status.resolved": ("resolved", "opgelost"),
    "no_gaps": ("No legal gaps.", "Geen juridische knelpunten."),
    "back_to_gaps": ("Back to the legal gaps", "Terug naar de juridische knelpunten"),
    "flagged_by": ("Flagged by", "Gesignaleerd door"),
}


def translate(language: str, key: str, **values: object) -> str:
    english, dutch = MESSAGES[key]
    text = dutch if language == "nl" else english
    return text.format(**values) if values else text


def translate_value(language: str, group: str, value: object) -> str:
    """The label of a value of ``group`` (key ``{group}.{value}``); values without a label show as they are
    (e.g. a state a newer service version added)."""
    key = f"{group}.{value}"
    return translate(language, key) if key in MESSAGES else str(value)


def refusal_text(language: str, code: str | None, values: dict[str, str]) -> str | None:
    """A refusal's reason (``refusal.<code>``, with ``values`` filled in) in ``language``; None when the code has
    no words here (a newer service's, or none) or its values do not fit them: the caller then shows the
    refuser's English, marked as such, rather than failing the page."""
    return _worded(language, f"refusal.{code}", values) if code else None


_LIMITS = ("max_length", "min_length", "le", "ge", "lt", "gt")  # the numbers a validation message names


def validation_text(language: str, field: str, kind: str, context: dict[str, object] | None) -> str:
    """What is wrong with ``field`` in ``language``, by pydantic's error type ``kind`` and the limits of its
    ``context`` (numbers only: no input value is shown); "invalid" for a type without words here."""
    limits = {name: value for name, value in (context or {}).items()
              if name in _LIMITS and isinstance(value, int | float)}
    words = _worded(language, f"validation.{kind}", {"field": field, **limits})
    return words if words is not None else translate(language, "field_invalid", field=field)


def _worded(language: str, key: str, values: Mapping[str, object]) -> str | None:
    """``key``'s words in ``language`` with ``values`` filled in; None when the key has none or the values do not
    fit them (words for a service's or pydantic's newer version): the caller words it another way."""
    found = MESSAGES.get(key)
    if found is None:
        return None
    try:
        return (found[1] if language == "nl" else found[0]).format(**values)
    except (KeyError, IndexError, ValueError):
        return None


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


def choose_language(request: Request, default: str, remembered: str | None) -> tuple[str, bool]:
    """The request's language, and whether it was chosen explicitly (then remember it in a cookie).

    ``remembered`` is the value of the :data:`LANGUAGE_COOKIE` under the name the console reads for this
    request (``__Host-`` prefixed when Secure: :class:`gateway.console.cookies.ConsoleCookies`); only a known
    language counts, anything else is ignored."""
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        return asked, True
    if remembered in LANGUAGES:
        return remembered, False
    return _from_accept_language(request.headers.get("accept-language", "")) or default, False
