"""CLI: ``wgs-gateway pseudonyms status|rotate`` — the pseudonymisation keys and their rotation.

``rotate`` adds a key version (the new current one) and re-keys the whole discovery index to it as a batch
job with a progress bar, without ever decrypting anything: each partnership-domain pseudonym is multiplied
by ``s_new / s_old`` (``gateway.pseudonyms.rotation``). The job is idempotent — rows already under the new
version pass through — so an interrupted run is simply started again. Afterwards restart the gateway
processes (they load the key ring on start) and let the participants re-enrol: their pseudonyms under the
new version differ from the old ones, which is the point of rotating.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import typer
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import func, select, update

from gateway.db.engine import make_engine, make_session_factory, transaction
from gateway.enrolment.tables import enrolments
from gateway.pseudonyms.keys import Domain
from gateway.pseudonyms.keystore import FileKeyStore
from gateway.pseudonyms.pep import Pseudonym
from gateway.pseudonyms.rotation import rekey_pseudonyms
from gateway.settings import Settings

pseudonyms_app = typer.Typer(help="Pseudonymisation keys and the discovery index.", no_args_is_help=True)
out = Console()
BATCH = 1000


def _store(settings: Settings) -> FileKeyStore:
    return FileKeyStore(settings.key_dir / "pseudonyms")


@pseudonyms_app.command("status")
def status() -> None:
    """Key versions (never the secrets) and enrolled rows per key version."""
    settings = Settings()
    ring = asyncio.run(_store(settings).initialise())
    out.print(f"key versions: {sorted(ring.versions)}; current: {ring.current}")
    engine = make_engine(settings.effective_database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(enrolments.c.key_version, func.count())
                                  .group_by(enrolments.c.key_version)).all()
    engine.dispose()
    for version, count in sorted(rows):
        out.print(f"enrolments under key version {version}: {count}")


@pseudonyms_app.command("rotate")
def rotate() -> None:
    """Add a key version and re-key the discovery index to it."""
    settings = Settings()
    store = _store(settings)
    old = asyncio.run(store.initialise()).current
    ring = asyncio.run(store.rotate())
    new = ring.current
    engine = make_engine(settings.effective_database_url)
    sessions = make_session_factory(engine)
    with engine.connect() as connection:
        total = int(connection.execute(select(func.count()).select_from(enrolments)).scalar_one())
    moved: Counter[str] = Counter()
    with Progress(console=out) as progress:
        task = progress.add_task(f"re-keying the index v{old} → v{new}", total=total)
        while True:  # rows still under another version, a batch at a time: an interrupted run resumes here
            with transaction(sessions) as session:
                rows = session.execute(select(enrolments.c.partnership, enrolments.c.organisation,
                                              enrolments.c.pseudonym).where(enrolments.c.key_version != new)
                                       .limit(BATCH)).all()
                if not rows:
                    break
                items = [((r.partnership, r.organisation, r.pseudonym), Domain(r.partnership),
                          Pseudonym.decode(r.pseudonym)) for r in rows]
                for (partnership, organisation, before), after in rekey_pseudonyms(items, ring, old_version=old,
                                                                                  new_version=new):
                    session.execute(update(enrolments).where(
                        enrolments.c.partnership == partnership, enrolments.c.organisation == organisation,
                        enrolments.c.pseudonym == before).values(pseudonym=after.encode(), key_version=new))
                    moved["rows"] += 1
            progress.advance(task, len(rows))
    engine.dispose()
    out.print(f"key version {new} is current; {moved['rows']} index rows re-keyed. Restart the gateway and "
              "have the participants re-enrol.")
