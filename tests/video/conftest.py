"""Video test helpers: the engine on, an occurrence with a trainer and sites, aiortc peers."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from video import media


@pytest.fixture
def app_config(app_config):
    """Every video test may start the in-process engine (it starts lazily, on first use)."""
    app_config["YUANJIAO_MEDIA"] = "inprocess"
    return app_config


@pytest.fixture(autouse=True)
def _stop_media(app):
    yield
    media.shutdown(app)


@dataclass
class Scene:
    occurrence: Any
    other_occurrence: Any
    trainer: Any
    site: Any
    other_site: Any
    unit: Any


@pytest.fixture
def scene(db_session, factory) -> Scene:
    """A lecture aimed at one org unit's site, trained by one trainer; and a second one."""
    from sessions.models import Occurrence, StudySession

    unit = factory.org_unit("第一支部")
    other_unit = factory.org_unit("第二支部")
    site = factory.site(unit, "一号会议室")
    other_site = factory.site(other_unit, "远方会议室")
    trainer = factory.user("trainer", username="lecturer")
    start = dt.datetime(2030, 7, 1, 2, 0, tzinfo=dt.UTC)
    occurrences = []
    for title, target in (("党史讲座", site), ("另一讲座", other_site)):
        study = StudySession(title=title, kind="party_history_lecture", trainer_id=trainer.id,
                             starts_at=start, duration_minutes=60, video_bitrate_kbps=600,
                             video_height=240)
        study.sites.append(target)
        db_session.add(study)
        db_session.flush()
        occurrence = Occurrence(session_id=study.id, original_start=start, starts_at=start,
                                ends_at=start + dt.timedelta(hours=1))
        db_session.add(occurrence)
        db_session.flush()
        occurrences.append(occurrence)
    db_session.commit()
    return Scene(occurrences[0], occurrences[1], trainer, site, other_site, unit)


def run(coro) -> Any:
    """Run a client scenario on a fresh loop in a thread of its own (the engine has its own
    loop too; and Playwright's sync API may have left a running loop in this thread)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="media-test-client")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


async def in_thread(fn, *args, **kwargs) -> Any:
    """Call blocking code (the Flask test client, the engine's sync API) from a scenario."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: fn(*args, **kwargs))


def engine_signals(engine, occurrence_id, options=None):
    """A peer's publish and subscribe calls straight to an in-process engine (site 1)."""
    async def publish(sdp):
        result = await in_thread(engine.publish, occurrence_id, sdp, options or {})
        return result["answer"], result["resource_id"]

    async def subscribe(sdp):
        result = await in_thread(engine.subscribe, occurrence_id, sdp, {"site_id": 1})
        return result["answer"], result["resource_id"]

    return publish, subscribe


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())
