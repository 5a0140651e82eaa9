"""Org units, sites and members: pages and API (filled in by the org work)."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the org blueprints."""
