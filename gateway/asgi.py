"""ASGI entry point for uvicorn/gunicorn workers: ``uvicorn gateway.asgi:app``."""

from __future__ import annotations

from gateway.app import create_app

app = create_app(freeze_heap=True)
