"""Start-up: several workers starting at once migrate and seed one at a time (issue 12)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from accounts.models import User
from app import create_app
from bootstrap import startup_lock
from extensions import db
from tests.conftest import ROOT

STARTER = "from app import create_app; create_app(); print('started')"


@pytest.mark.live
def test_a_starting_worker_waits_for_the_one_that_migrates(tmp_path, database_url_base):
    url = database_url_base or f"sqlite:///{tmp_path / 'start.sqlite3'}"
    holder = create_app({"SQLALCHEMY_DATABASE_URI": url, "YUANJIAO_AUTO_MIGRATE": False,
                         "YUANJIAO_MEDIA": "off", "SECRET_KEY": "x"})
    env = {**os.environ, "DATABASE_URL": url, "YUANJIAO_DEMO": "0", "YUANJIAO_MEDIA": "off",
           "YUANJIAO_ADMIN_USERNAME": "admin", "YUANJIAO_ADMIN_PASSWORD": "admin-password",
           "SECRET_KEY": "x"}
    with holder.app_context(), startup_lock(holder):
        worker = subprocess.Popen([sys.executable, "-c", STARTER], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(5.0)  # a start takes about 2 s here
        assert worker.poll() is None, worker.communicate()  # still waiting for the lock
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "started" in out
    # A second worker after the first finds the schema current and starts at once.
    again = subprocess.run([sys.executable, "-c", STARTER], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    with holder.app_context():
        admins = db.session.scalar(select(func.count(User.id)).where(User.role == "admin"))
        db.session.remove()
    assert admins == 1
