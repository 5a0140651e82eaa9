"""English readers get English errors: the API's JSON, the error page and socket acks carry
no Chinese except data, whatever sentence the service raised (issue 8, translations)."""

from __future__ import annotations

import re

from core.errors import NotFound, ValidationError, localize

CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def test_chinese_readers_keep_the_services_sentence(app):
    with app.test_request_context("/"):
        error = NotFound("学习点不存在：7", details={"site_id": 7})
        assert error.message == "学习点不存在：7"


def test_english_readers_get_the_codes_sentence_with_its_field(app):
    with app.test_request_context("/?lang=en"):
        from flask import session

        session["lang"] = "en"
        error = ValidationError("日期格式无效：2026-13-01", field="starts_at")
        assert error.message == "Invalid input (starts_at)"
        assert error.to_dict()["message"] == "Invalid input (starts_at)"
        assert not CJK.search(NotFound("党员不存在：3").message)
        # A code nobody mapped falls back to its HTTP status class.
        assert localize("莫名其妙", "odd_code", 404, {}) == "Not found"


def test_english_api_errors_carry_no_chinese(client, factory, db_session):
    admin = factory.user("admin", username="boss")
    headers = factory.headers(admin)
    answers = [
        client.get("/api/v1/sites/999999?lang=en", headers=headers),
        client.post("/api/v1/users?lang=en", headers=headers,
                    json={"username": "x", "password": "short", "role": "nonsense"}),
        client.get("/api/v1/occurrences/424242?lang=en", headers=headers),
        client.get("/api/v1/users?lang=en"),
    ]
    for r in answers:
        assert r.status_code >= 400, r.get_data(as_text=True)
        body = r.get_json()
        assert body["message"], body
        assert not CJK.search(body["message"]), body
    # The same request in Chinese still says it in Chinese.
    zh = client.get("/api/v1/sites/999999?lang=zh", headers=headers).get_json()
    assert CJK.search(zh["message"])


def test_english_error_page_carries_no_chinese(client, factory, db_session):
    factory.user("admin", username="boss2", password="admin-password")
    db_session.commit()
    client.post("/login?lang=en", data={"username": "boss2", "password": "admin-password"})
    r = client.get("/org/sites/999999?lang=en")
    assert r.status_code == 404
    text = r.get_data(as_text=True)
    body = text.split("<main", 1)[-1]
    message = re.search(r'<section class="card error-page">(.*?)</section>', body, re.S)
    assert message is not None
    assert not CJK.search(message.group(1)), message.group(1)


def test_english_socket_acks_carry_no_chinese(client, socket_client_factory, factory, db_session):
    factory.user("admin", username="boss3", password="admin-password")
    db_session.commit()
    client.post("/login", data={"username": "boss3", "password": "admin-password"})
    zh = socket_client_factory("/attendance", flask_client=client)
    ack = zh.emit("site:join", {"occurrence_id": 987654, "site_id": 1}, namespace="/attendance",
                  callback=True)
    assert ack["ok"] is False
    assert CJK.search(ack["message"])
    client.get("/?lang=en")  # the choice is kept in the session the socket shares
    en = socket_client_factory("/attendance", flask_client=client)
    ack = en.emit("site:join", {"occurrence_id": 987654, "site_id": 1}, namespace="/attendance",
                  callback=True)
    assert ack["ok"] is False
    assert ack["message"], ack
    assert not CJK.search(ack["message"]), ack
