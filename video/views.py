"""Live video: WHIP, WHEP and the live pages."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the video blueprints."""
