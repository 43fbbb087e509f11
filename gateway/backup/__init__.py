"""Backups of one deployment: the database and the key directory, and the check of a backup before a restore.

Modules, one job each:

============  ==============================================================================================
``copying``   the consistent copies: SQLite's online backup, the key directory with its permissions
``state``     what a database holds that a manifest records (migration head, audit log, register version)
``manifest``  ``MANIFEST.json``: the files with their SHA-256, and that state; never key material
``take``      ``db backup``: the audit entry, the copies, the manifest, in that order
``check``     ``db verify-backup``: digests, the copy's state and its audit log
``restore``   ``db record-restore``: the restored log's first entry says from which backup
``cli``       the commands (in the ``db`` group)
============  ==============================================================================================
"""
