"""Live video over HTTP: WHIP ingest, WHEP egress, the live API, recordings, the live pages."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask.views import MethodView
from flask_login import current_user
from flask_smorest import Blueprint as ApiBlueprint
from marshmallow import Schema, fields, validate

from accounts.models import User
from accounts.service import expired_token, token_lookup
from core import policy
from core.api import SiteScreen, api, bearer_token, current_api_user, current_principal
from core.pagination import SelectPage
from core.types import utcnow
from extensions import csrf, db
from org.models import Member, Site
from sessions import service as sessions_service
from video import hls_views, http, janus_views, media, service
from video.engine import MediaError, parse_offer
from video.errors import (
    BadSdp,
    Conflict,
    DomainError,
    Forbidden,
    IceRestartUnsupported,
    MediaUnavailable,
    NotFound,
    NotLive,
    PreconditionFailed,
    UnsupportedMediaType,
    ValidationError,
)
from video.ice import ice_servers
from video.live import live_payload
from video.models import Recording

#: Seconds a page or client waits before asking WHEP again while nothing is live.
RETRY_AFTER = 3

signaling = Blueprint("video_signaling", __name__)
pages = Blueprint("video", __name__)
blp = ApiBlueprint("live", __name__, url_prefix="/api/v1",
                   description="直播：推流密钥、直播状态、录像")


def init_app(app: Flask) -> None:
    """Register WHIP/WHEP, the live API and the live pages."""
    app.register_blueprint(signaling)
    app.register_blueprint(pages)
    api.register_blueprint(blp)
    hls_views.init_app(app)
    janus_views.init_app(app)
    # WHIP/WHEP carry bearer keys (OBS sends no CSRF token); cookie callers are checked
    # by current_principal(), which enforces the CSRF header for them.
    csrf.exempt(signaling)
    csrf.exempt(blp)


# --- WHIP / WHEP ------------------------------------------------------------------------


@signaling.errorhandler(NotLive)
def _not_live(error: NotLive):
    response = jsonify(error.to_dict())
    response.status_code = error.status
    response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def _sdp_body() -> str:
    if request.mimetype != "application/sdp":
        raise UnsupportedMediaType("Content-Type 必须是 application/sdp",
                                   details={"content_type": request.mimetype})
    sdp = request.get_data(as_text=True)
    try:
        parse_offer(sdp)
    except MediaError as exc:
        raise BadSdp(f"SDP 无效：{exc.message}") from exc
    return sdp


def _media_call(fn, *args) -> dict[str, Any]:
    """Call the engine and map its refusals to HTTP errors."""
    try:
        return fn(*args)
    except MediaError as exc:
        if exc.code == "bad_sdp":
            raise BadSdp(f"SDP 无效：{exc.message}") from exc
        if exc.code == "not_live":
            raise NotLive("直播尚未开始，请稍候重试",
                          details={"retry_after": RETRY_AFTER}) from exc
        if exc.code == "already_live":
            raise Conflict("该场次已在直播中", code="already_live") from exc
        if exc.code == "precondition_failed":
            raise PreconditionFailed("If-Match 与该资源当前的 ETag 不符") from exc
        if exc.code == "ice_restart_unsupported":
            raise IceRestartUnsupported("不支持 ICE 重启，请重新发起连接") from exc
        raise MediaUnavailable(f"媒体服务出错：{exc.message}") from exc
    except TimeoutError as exc:
        raise MediaUnavailable("媒体服务无响应") from exc


def _sdp_created(location: str, result: dict[str, Any]) -> Response:
    return http.created_response(location, result["answer"], result.get("etag"))


@signaling.before_request
def _options():
    """OPTIONS (and the CORS preflight) on an endpoint or a resource: 204, no login."""
    if request.method == "OPTIONS":
        return http.options_response(resource="resource_id" in (request.view_args or {}))
    return None


@signaling.after_request
def _cors(response: Response) -> Response:
    return http.add_cors(response)


def _check_media_enabled() -> None:
    if not media.media_enabled():
        raise MediaUnavailable("本服务未启用直播媒体服务（YUANJIAO_MEDIA=off）")


def _publisher(occurrence) -> User:
    bearer = bearer_token()
    cookie_user = None
    if not bearer:
        cookie_user = current_principal()
        if isinstance(cookie_user, SiteScreen):
            raise Forbidden("学习点屏幕不能推流")
    return service.publisher_for(db.session, occurrence, bearer, cookie_user)


@signaling.post("/whip/<int:occurrence_id>")
def whip_publish(occurrence_id: int):
    """WHIP ingest (RFC 9725): the trainer's offer in, 201 + Location + answer out."""
    if request.mimetype != "application/sdp":
        raise UnsupportedMediaType("Content-Type 必须是 application/sdp")
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    user = _publisher(occurrence)
    _check_media_enabled()
    sdp = _sdp_body()
    now = utcnow()
    relative = service.new_recording_path(occurrence.id, now)
    absolute = f"{media.recordings_dir()}/{relative}"
    study = occurrence.session
    options = {"user_id": user.id, "bitrate_kbps": study.video_bitrate_kbps,
               "height": study.video_height, "record_path": absolute,
               **hls_views.publish_options(occurrence.id)}
    result = _media_call(media.backend().publish, occurrence.id, sdp, options)
    if result.get("started"):
        service.fail_stale_recordings(db.session, occurrence.id, now)
        service.start_recording(db.session, occurrence, relative, now)
        db.session.commit()
    return _sdp_created(url_for(".whip_resource", occurrence_id=occurrence.id,
                                resource_id=result["resource_id"]), result)


def _end_resource(occurrence, principal, resource_id: str, kind: str, message: str
                  ) -> Response:
    """Stop a WHIP/WHEP resource once it is known to belong to this occurrence and this
    caller (or one who manages the occurrence); otherwise 404 and nothing happens."""
    backend = media.backend()
    described = backend.describe(resource_id)
    if described is None or described.get("kind") != kind or not policy.can(
            principal, "live.end_connection", (occurrence, described)):
        raise NotFound(message, details={"resource_id": resource_id})
    db.session.rollback()  # nothing to write; end the read transaction before waiting
    if backend.stop(resource_id, occurrence.id) is None:
        raise NotFound(message, details={"resource_id": resource_id})
    return Response(status=200)


@signaling.delete("/whip/<int:occurrence_id>/<resource_id>")
def whip_resource(occurrence_id: int, resource_id: str):
    """End the broadcast (the trainer's stop button, or OBS's "stop streaming")."""
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    bearer = bearer_token()
    if bearer and bearer.startswith("sk_"):  # OBS: the occurrence's stream key
        principal = service.publisher_for(db.session, occurrence, bearer, None)
    else:
        principal = current_principal()
    _check_media_enabled()
    return _end_resource(occurrence, principal, resource_id, "publisher",
                         "该推流资源不存在或已结束")


@signaling.post("/whep/<int:occurrence_id>")
def whep_subscribe(occurrence_id: int):
    """WHEP egress: a site screen's, member's, organizer's or admin's offer; 201 + answer."""
    if request.mimetype != "application/sdp":
        raise UnsupportedMediaType("Content-Type 必须是 application/sdp")
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    principal = current_principal()
    policy.require(principal, "live.watch", occurrence)
    _check_media_enabled()
    sdp = _sdp_body()
    site_id = request.args.get("site", type=int)
    info = service.subscriber_info(db.session, principal, site_id)
    db.session.rollback()  # nothing to write; end the read transaction before waiting
    result = _media_call(media.backend().subscribe, occurrence.id, sdp, info)
    return _sdp_created(url_for(".whep_resource", occurrence_id=occurrence.id,
                                resource_id=result["resource_id"]), result)


@signaling.delete("/whep/<int:occurrence_id>/<resource_id>")
def whep_resource(occurrence_id: int, resource_id: str):
    """Leave: the viewer who created the resource (same user, or the same site's screen),
    or one who manages the occurrence. The resource id alone is not enough."""
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    principal = current_principal()
    _check_media_enabled()
    return _end_resource(occurrence, principal, resource_id, "subscriber",
                         "该观看资源不存在或已结束")


def _trickle(occurrence_id: int, resource_id: str) -> Response:
    """Trickle ICE by PATCH (RFC 9725 section 4.3): 204 and the resource's ETag."""
    if request.mimetype != http.SDPFRAG:
        raise UnsupportedMediaType(f"Content-Type 必须是 {http.SDPFRAG}",
                                   details={"content_type": request.mimetype})
    _check_media_enabled()
    result = _media_call(media.backend().trickle, resource_id, request.get_data(as_text=True),
                         http.if_match_values(request.headers.get("If-Match")))
    if result is None or result.get("occurrence_id") != occurrence_id:
        raise NotFound("该资源不存在或已结束", details={"resource_id": resource_id})
    response = Response(status=204)
    response.headers["ETag"] = result["etag"]
    return response


@signaling.patch("/whip/<int:occurrence_id>/<resource_id>")
def whip_patch(occurrence_id: int, resource_id: str):
    """The publisher's late ICE candidates; an ICE restart answers 422."""
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    _publisher(occurrence)
    db.session.rollback()
    return _trickle(occurrence.id, resource_id)


@signaling.patch("/whep/<int:occurrence_id>/<resource_id>")
def whep_patch(occurrence_id: int, resource_id: str):
    """A player's late ICE candidates (the resource id is the capability, as for DELETE)."""
    return _trickle(occurrence_id, resource_id)


# --- the live API -----------------------------------------------------------------------


class StreamKeySchema(Schema):
    stream_key = fields.String(required=True)
    whip_url = fields.String(required=True)


class LiveSiteSchema(Schema):
    resource_id = fields.String()
    kind = fields.String()
    label = fields.String()
    site_id = fields.Integer(allow_none=True)
    site_name = fields.String()
    member_id = fields.Integer(allow_none=True)
    member_name = fields.String()
    user_name = fields.String()
    state = fields.String()
    joined_at = fields.Float()
    first_frame_ms = fields.Integer(allow_none=True)
    codec = fields.String()
    #: "origin", or the Janus edge the site watches from (video.janus_views).
    served_by = fields.String()
    layer = fields.String(metadata={"description": "high, low or audio (video paused)"})
    loss = fields.Float(allow_none=True, metadata={
        "description": "percent lost, smoothed, from the site's RTCP receiver reports"})
    jitter_ms = fields.Float(allow_none=True)
    rtt_ms = fields.Float(allow_none=True)
    estimate_kbps = fields.Integer(allow_none=True)
    pinned = fields.String(allow_none=True)


class LiveSchema(Schema):
    occurrence_id = fields.Integer()
    state = fields.String(metadata={"enum": ["waiting", "live", "ended"]})
    sites = fields.List(fields.Nested(LiveSiteSchema))
    stats = fields.Dict()


class RecordingSchema(Schema):
    id = fields.Integer()
    occurrence_id = fields.Integer()
    mime_type = fields.String()
    started_at = fields.DateTime()
    ended_at = fields.DateTime(allow_none=True)
    duration_seconds = fields.Float(allow_none=True)
    size_bytes = fields.Integer(allow_none=True)
    status = fields.String()
    url = fields.Method("_url")

    def _url(self, recording: Recording) -> str:
        return url_for("video.recording_file", recording_id=recording.id)


def _may_follow(principal, occurrence) -> None:
    policy.require(principal, "live.watch", occurrence)


@blp.route("/occurrences/<int:occurrence_id>/stream-key")
class StreamKeyView(MethodView):
    @blp.response(201, StreamKeySchema)
    def post(self, occurrence_id: int):
        """A new stream key for OBS or the broadcast page (revokes the previous one).

        Only the session's trainer or an admin. The key is shown once.
        """
        user = current_api_user()
        occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
        key = service.issue_stream_key(db.session, occurrence, user, utcnow())
        db.session.commit()
        return {"stream_key": key,
                "whip_url": url_for("video_signaling.whip_publish", occurrence_id=occurrence_id,
                                    _external=True)}


@blp.route("/occurrences/<int:occurrence_id>/live")
class LiveView(MethodView):
    @blp.response(200, LiveSchema)
    def get(self, occurrence_id: int):
        """waiting, live or ended; the connected sites; bitrate, frame rate, site count."""
        occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
        principal = current_principal()
        _may_follow(principal, occurrence)
        return live_payload(occurrence_id,
                            with_resources=policy.can(principal, "live.manage", occurrence))


class LayerPinSchema(Schema):
    layer = fields.String(required=True, allow_none=True, validate=validate.OneOf(
        ["high", "low", "audio"]), metadata={"description": "high, low, audio; null: automatic"})


@blp.route("/occurrences/<int:occurrence_id>/live/sites/<resource_id>/layer",
           methods=["PUT"])
@blp.arguments(LayerPinSchema)
@blp.response(200, LayerPinSchema)
def pin_layer(data, occurrence_id: int, resource_id: str):
    """Pin a connected site to a layer of the ladder (null: back to automatic): those who
    manage the occurrence, for a room whose link the automatic choice misjudges."""
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    principal = current_principal()
    if not policy.can(principal, "live.manage", occurrence):
        raise Forbidden("只有本场次的管理者可以指定学习点的画质层")
    _check_media_enabled()
    db.session.rollback()
    backend = media.backend()
    owner = backend.describe(resource_id)
    if owner is None or owner.get("occurrence_id") != occurrence_id \
            or owner.get("kind") != "subscriber":
        raise NotFound("该观看资源不存在或已结束", details={"resource_id": resource_id})
    try:
        pinned = backend.pin(resource_id, data["layer"])
    except MediaError as exc:
        if exc.code == "bad_layer":
            raise ValidationError(exc.message, field="layer") from exc
        raise
    if not pinned:
        raise NotFound("该观看资源不存在或已结束", details={"resource_id": resource_id})
    return {"layer": data["layer"]}


@blp.route("/occurrences/<int:occurrence_id>/recordings")
class RecordingsView(MethodView):
    @blp.response(200, RecordingSchema(many=True))
    @blp.paginate(SelectPage, page_size=50, max_page_size=1000)
    def get(self, occurrence_id: int):
        """The recordings of an occurrence (make-up study plays the complete ones)."""
        from sqlalchemy import select

        occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
        _may_follow(current_principal(), occurrence)
        return select(Recording).where(Recording.occurrence_id == occurrence_id).order_by(
            Recording.id)


# --- recordings and pages -----------------------------------------------------------------


@pages.get("/recordings/<int:recording_id>")
def recording_file(recording_id: int):
    """The recording's file, with range requests, for whoever may watch the occurrence."""
    recording = db.session.get(Recording, recording_id)
    if recording is None:
        raise NotFound("录像不存在", details={"recording_id": recording_id})
    occurrence = sessions_service.get_occurrence(db.session, recording.occurrence_id)
    principal = _page_principal()
    if principal is None:
        raise_login()
    _may_follow(principal, occurrence)
    path = service.recording_file(media.recordings_dir(), recording)
    return send_file(path, mimetype=recording.mime_type, conditional=True,
                     download_name=f"recording-{recording.id}.webm")


def _page_principal():
    """A logged-in user, or a site screen's ?token= (a meeting-room screen has no login)."""
    if bearer_token():
        return current_principal()
    token = request.args.get("token")
    if token:
        row = token_lookup(db.session, token)
        if row is None:
            expired = expired_token(db.session, token)
            if expired is not None and expired.site is not None:
                # A screen's token ran out: say so on the screen (it looks again every
                # minute, so renewing the site's tokens brings it back by itself).
                abort(make_response(render_template(
                    "video/screen_expired.html", site=expired.site,
                    expired_at=expired.expires_at), 403))
            raise Forbidden("屏幕令牌无效或已吊销", code="invalid_token")
        if row.user_id is not None:
            return row.user
        if row.site_id is None:
            raise Forbidden("屏幕令牌无效或已吊销", code="invalid_token")
        return SiteScreen(site_id=row.site_id)
    if current_user.is_authenticated:
        return current_user._get_current_object()
    return None


def raise_login():
    abort(redirect(url_for("accounts.login", next=request.full_path)))


def _turn_user() -> str:
    """Who the page's TURN credentials are for (coturn logs it): the login, or a screen."""
    if current_user.is_authenticated:
        return f"user{current_user.id}"
    return "screen"


def _page_config(occurrence, **extra: Any) -> dict[str, Any]:
    return {
        "occurrenceId": occurrence.id,
        "whipUrl": url_for("video_signaling.whip_publish", occurrence_id=occurrence.id),
        "whepUrl": url_for("video_signaling.whep_subscribe", occurrence_id=occurrence.id),
        "liveUrl": f"/api/v1/occurrences/{occurrence.id}/live",
        "iceServers": ice_servers(current_app.config, _turn_user()),
        "retryAfter": RETRY_AFTER,
        **extra,
    }


@pages.get("/live/<int:occurrence_id>/broadcast")
def broadcast_page(occurrence_id: int):
    """The trainer's page: devices, preview, screen sharing, start/stop, sites and figures."""
    if not current_user.is_authenticated:
        raise_login()
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    policy.require(current_user, "live.publish", occurrence)
    return render_template("video/broadcast.html", occurrence=occurrence,
                           live=live_payload(occurrence.id),
                           config=_page_config(occurrence, role="broadcast"))


def _screen_site(site_id: int):
    """The site a room-screen page shows, and who opens it: that site's screen token, or
    a logged-in user who may open its screen; else the login page or 403."""
    site = db.session.get(Site, site_id)
    if site is None:
        raise NotFound("学习点不存在", details={"site_id": site_id})
    principal = _page_principal()
    if principal is None:
        raise_login()
    if isinstance(principal, SiteScreen):
        if principal.site_id != site.id:
            raise Forbidden("该屏幕令牌属于其他学习点")
    elif not policy.can(principal, "site.screen", site):
        raise Forbidden("无权打开该学习点的屏幕")
    return site, principal


@pages.get("/live/<int:occurrence_id>/site/<int:site_id>")
def site_page(occurrence_id: int, site_id: int):
    """A meeting room's screen: a kiosk player, by operator login or ?token=."""
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    site, principal = _screen_site(site_id)
    can_operate = not isinstance(principal, SiteScreen)
    # A logged-in operator's page uses the cookie, not a screen token.
    token = None if can_operate else request.args.get("token")
    return render_template(
        "video/site.html", occurrence=occurrence, site=site, site_token=token,
        can_operate=can_operate, live=live_payload(occurrence.id),
        config=_page_config(occurrence, role="site", siteId=site.id, token=token,
                            # A kiosk goes back to its standing address once the lesson
                            # has ended, to wait there for the next one.
                            kioskUrl=url_for("video.room_screen", site_id=site.id, token=token)
                            if token else None))


@pages.get("/screen/<int:site_id>")
def room_screen(site_id: int):
    """The standing address of a meeting room's screen (bookmark it with ?token=).

    It opens the lecture that runs now, or shows the next one and reloads itself until
    it is time, so that a screen left on all day needs no one at the keyboard.
    """
    from sessions.service import site_screen_occurrence

    site, _principal = _screen_site(site_id)
    occurrence, is_now = site_screen_occurrence(db.session, site.id, utcnow())
    token = request.args.get("token")
    if is_now and occurrence is not None:
        args: dict[str, Any] = {"token": token} if token else {}
        return redirect(url_for("video.site_page", occurrence_id=occurrence.id,
                                site_id=site.id, **args))
    return render_template("video/screen_idle.html", site=site, occurrence=occurrence)


@pages.get("/live/<int:occurrence_id>/watch")
def watch_page(occurrence_id: int):
    """An individual member watching alone (also admins, organizers, the trainer)."""
    if not current_user.is_authenticated:
        raise_login()
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    policy.require(current_user, "live.watch", occurrence)
    member = db.session.get(Member, current_user.member_id) if current_user.member_id else None
    return render_template("video/watch.html", occurrence=occurrence, member=member,
                           live=live_payload(occurrence.id),
                           config=_page_config(occurrence, role="watch"))


__all__ = ["DomainError", "init_app", "live_payload"]
