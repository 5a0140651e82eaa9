"""Attendance: pages and API."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the attendance blueprints."""
