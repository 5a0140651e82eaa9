"""Scheduled work of the scheduling domain, outside any request: horizons are extended at
start-up (`bootstrap`), once a day in every serving process, and by
`flask --app app extend-horizons` (for cron). Never by a GET: a read writes nothing.
"""

from __future__ import annotations

import logging

from flask import Flask

from core.types import utcnow
from extensions import db, socketio
from sessions.service import extend_horizons

log = logging.getLogger(__name__)

#: How often a serving process extends horizons. A series is extended once its horizon
#: falls a week short, so daily runs keep every open-ended rule materialized.
HORIZON_JOB_SECONDS = 24 * 3600


def extend_all_horizons(app: Flask) -> int:
    """Materialize open-ended rules up to now + YUANJIAO_HORIZON_DAYS; commits; returns the
    occurrences created."""
    with app.app_context():
        try:
            created = extend_horizons(db.session, utcnow())
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise
        finally:
            db.session.remove()
    if created:
        log.info("horizons extended: %d occurrences created", created)
    return created


def start_horizon_job(app: Flask) -> None:
    """Extend horizons now and then once a day, in a background task of the Socket.IO
    server (a thread, or a greenlet under gevent)."""

    def run() -> None:
        while True:
            try:
                extend_all_horizons(app)
            except Exception:  # a failed run is retried the next day; never kill the task
                log.exception("extending horizons failed")
            socketio.sleep(HORIZON_JOB_SECONDS)

    socketio.start_background_task(run)
