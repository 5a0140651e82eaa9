"""The application behind `current_app`."""

from __future__ import annotations

from flask import Flask, current_app


def app_object() -> Flask:
    """The app itself, not the context-bound proxy: for threads and loops that outlive the
    request or the app context that started them."""
    return current_app._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
