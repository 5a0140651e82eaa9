"""Scheduling: the dashboard, session pages, the sessions API and calendar feeds."""

from flask import Blueprint, Flask, render_template
from flask_login import login_required

pages = Blueprint("sessions", __name__)


def init_app(app: Flask) -> None:
    app.register_blueprint(pages)


@pages.route("/")
@login_required
def dashboard():
    """Today's and upcoming occurrences."""
    return render_template("sessions/dashboard.html")
