"""Member import: xlsx and csv, Chinese and English headers, encodings, all-or-nothing."""

from __future__ import annotations

import io

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from core.errors import DomainError, Forbidden
from core.principals import SYSTEM
from org import service
from org.errors import ImportRefused, UnsupportedFile
from org.models import Member

ZH_HEADER = ["姓名", "党员编号", "所在支部", "学习点", "类别", "手机"]


def xlsx(rows: list[list]) -> bytes:
    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_bytes(rows: list[list[str]], encoding: str) -> bytes:
    return "\r\n".join(",".join(row) for row in rows).encode(encoding)


def count(db_session) -> int:
    return db_session.scalar(select(func.count()).select_from(Member))


def test_chinese_xlsx_creates_members(db_session, org):
    content = xlsx([
        ZH_HEADER,
        ["王五", "A002", "第一支部", "一号会议室", "预备党员", 13800138000],
        ["赵六", "B002", "第二支部", None, "流动党员", None],
        [None, None, None, None, None, None],  # blank rows are skipped
        ["钱七", 3003, org.group_a1.id, org.site_a.id, "activist", "139 0000 0000"],
    ])
    report = service.import_members(db_session, "名册.xlsx", content, dry_run=False, actor=SYSTEM)
    db_session.commit()
    assert report["format"] == "xlsx"
    assert (report["created"], report["updated"], report["unchanged"]) == (3, 0, 0)
    assert [r["row"] for r in report["rows"]] == [2, 3, 5]
    wang = db_session.scalar(select(Member).where(Member.member_no == "A002"))
    assert wang.category == "probationary"
    assert wang.home_site_id == org.site_a.id
    assert wang.phone == "13800138000"  # a number cell, without ".0"
    zhao = db_session.scalar(select(Member).where(Member.member_no == "B002"))
    assert zhao.org_unit_id == org.branch_b.id
    assert zhao.category == "mobile"
    assert zhao.home_site_id is None
    qian = db_session.scalar(select(Member).where(Member.member_no == "3003"))
    assert qian.org_unit_id == org.group_a1.id  # matched by id
    assert report["rows"][0]["member_id"] == wang.id


def test_english_csv_with_bom(db_session, org):
    content = "\ufeff" + "name,member_no,org_unit,site,category,phone\r\n" \
        "Wang Wu,E100,第一支部,一号会议室,full,13800000000\r\n" \
        "\"Li, Si\",E101,第二支部,,probationary,\r\n"
    report = service.import_members(db_session, "members.csv", content.encode("utf-8"),
                                    dry_run=False, actor=SYSTEM)
    assert report["created"] == 2
    li = db_session.scalar(select(Member).where(Member.member_no == "E101"))
    assert li.name == "Li, Si"
    assert li.category == "probationary"


def test_gbk_csv_as_excel_saves_it(db_session, org):
    content = csv_bytes([ZH_HEADER, ["欧阳娜娜", "G001", "第二支部", "二号会议室", "入党积极分子",
                                     "13700000000"]], "gbk")
    with pytest.raises(UnicodeDecodeError):
        content.decode("utf-8")
    report = service.import_members(db_session, "名册.csv", content, dry_run=False, actor=SYSTEM)
    assert report["created"] == 1
    member = db_session.scalar(select(Member).where(Member.member_no == "G001"))
    assert member.name == "欧阳娜娜"
    assert member.category == "activist"
    assert member.home_site_id == org.site_b.id


def test_dry_run_writes_nothing(db_session, org):
    before = count(db_session)
    content = csv_bytes([ZH_HEADER, ["王五", "A002", "第一支部", "", "正式党员", ""],
                         ["张三", "A001", "第一支部", "", "预备党员", ""]], "utf-8")
    report = service.import_members(db_session, "m.csv", content, dry_run=True, actor=SYSTEM)
    db_session.commit()
    assert report["dry_run"] is True
    assert [(r["member_no"], r["action"]) for r in report["rows"]] == [
        ("A002", "create"), ("A001", "update")]
    assert report["rows"][1]["changes"] == {"category": {"old": "full", "new": "probationary"}}
    db_session.expire_all()
    assert count(db_session) == before
    assert db_session.get(Member, org.member_a.id).category == "full"


def test_update_existing_members(db_session, org):
    content = csv_bytes([
        ["党员编号", "姓名", "所在支部", "学习点", "类别", "手机"],
        ["A001", "张三", "第二支部", "二号会议室", "正式党员", "13911112222"],
        ["B001", "李四", "第二支部", "", "预备党员", ""],
    ], "utf-8")
    report = service.import_members(db_session, "m.csv", content, dry_run=False, actor=SYSTEM)
    db_session.commit()
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 1, 1)
    changes = report["rows"][0]["changes"]
    assert changes["org_unit_id"] == {"old": org.branch_a.id, "new": org.branch_b.id}
    assert changes["home_site_id"] == {"old": org.site_a.id, "new": org.site_b.id}
    assert changes["phone"] == {"old": "", "new": "13911112222"}
    assert "category" not in changes
    assert "name" not in changes
    db_session.expire_all()
    member = db_session.get(Member, org.member_a.id)
    assert member.org_unit_id == org.branch_b.id
    assert member.phone == "13911112222"
    # An empty cell keeps what the roster has.
    assert db_session.get(Member, org.member_b.id).home_site_id == org.site_b.id


def test_bad_rows_refuse_the_whole_file(db_session, org):
    before = count(db_session)
    content = xlsx([
        ZH_HEADER,
        ["王五", "A002", "第一支部", "", "正式党员", ""],        # fine
        ["赵六", "A003", "不存在的支部", "", "正式党员", ""],     # row 3: unknown branch
        ["钱七", "A004", "第一支部", "", "党员", ""],            # row 4: bad category
        ["", "A005", "第一支部", "", "", ""],                   # row 5: empty name
        ["孙八", "A002", "第一支部", "火星会议室", "", ""],        # row 6: duplicate + site
    ])
    with pytest.raises(ImportRefused) as exc:
        service.import_members(db_session, "m.xlsx", content, dry_run=False, actor=SYSTEM)
    rows = {r["row"]: r["message"] for r in exc.value.details["rows"]}
    assert set(rows) == {3, 4, 5, 6}
    assert "不存在的支部" in rows[3]
    assert "类别" in rows[4]
    assert "姓名为空" in rows[5]
    assert "第 2 行重复" in rows[6]
    assert "火星会议室" in rows[6]
    assert exc.value.status == 422
    db_session.rollback()
    assert count(db_session) == before


def test_two_bad_rows_over_the_api(client, org, db_session):
    content = csv_bytes([ZH_HEADER,
                         ["王五", "A002", "第一支部", "", "", ""],
                         ["赵六", "A003", "第九支部", "", "", ""],
                         ["钱七", "A004", "第一支部", "", "老党员", ""]], "gb18030")
    r = client.post("/api/v1/members/import", headers=org.h["admin"],
                    content_type="multipart/form-data",
                    data={"file": (io.BytesIO(content), "名册.csv"), "dry_run": "false"})
    assert r.status_code == 422
    body = r.get_json()
    assert body["error"] == "import_refused"
    assert [row["row"] for row in body["details"]["rows"]] == [3, 4]
    assert all(row["message"] for row in body["details"]["rows"])
    assert db_session.scalar(select(Member).where(Member.member_no == "A002")) is None


def test_api_dry_run_then_import(client, org, db_session):
    content = csv_bytes([["name", "member_no", "org_unit"], ["王五", "A002", "第一支部"]],
                        "utf-8")

    def post(dry_run: str):
        return client.post("/api/v1/members/import", headers=org.h["organizer_a"],
                           content_type="multipart/form-data",
                           data={"file": (io.BytesIO(content), "m.csv"), "dry_run": dry_run})

    dry = post("true")
    assert dry.status_code == 200
    assert dry.get_json()["dry_run"] is True
    assert dry.get_json()["created"] == 1
    assert db_session.scalar(select(Member).where(Member.member_no == "A002")) is None
    real = post("false")
    assert real.status_code == 201
    assert real.get_json()["created"] == 1
    again = post("false")
    assert again.status_code == 201
    assert again.get_json()["unchanged"] == 1


def test_out_of_scope_rows_are_refused(db_session, org):
    content = csv_bytes([ZH_HEADER,
                         ["王五", "A002", "第二支部", "", "", ""],
                         ["李四", "B001", "第一支部", "", "", ""],
                         ["周九", "A009", "第一支部", "二号会议室", "", ""]], "utf-8")
    with pytest.raises(ImportRefused) as exc:
        service.import_members(db_session, "m.csv", content, dry_run=True,
                               actor=org.organizer_a)
    rows = {r["row"]: r["message"] for r in exc.value.details["rows"]}
    assert set(rows) == {2, 3, 4}
    assert "管理范围" in rows[2]
    assert "管理范围" in rows[3]
    assert "管理范围" in rows[4]
    with pytest.raises(Forbidden):
        service.import_members(db_session, "m.csv", content, dry_run=True, actor=org.trainer)


@pytest.mark.parametrize(("filename", "content", "status", "code"), [
    ("m.csv", b"", 422, "empty_file"),
    ("m.csv", b"   \r\n", 422, "empty_file"),
    ("m.csv", "姓名,党员编号,所在支部\r\n".encode(), 422, "empty_file"),
    ("m.csv", "姓名,手机\r\n王五,1\r\n".encode(), 422, "missing_columns"),
    ("m.pdf", b"%PDF-1.4 not a table", 400, "unsupported_file"),
    ("m.xlsx", b"this is not a workbook", 400, "unsupported_file"),
    ("m.xlsx", b"PK\x03\x04broken zip", 400, "unsupported_file"),
    ("m.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 64, 400, "unsupported_file"),
    ("m.csv", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 400, "unsupported_file"),
])
def test_unusable_files(db_session, org, filename, content, status, code):
    with pytest.raises(DomainError) as exc:
        service.import_members(db_session, filename, content, dry_run=True, actor=SYSTEM)
    assert (exc.value.status, exc.value.code) == (status, code)
    assert exc.value.message


def test_unusable_file_over_the_api(client, org):
    for content, name, status in ((b"", "m.csv", 422), (b"GIF89a\0\0", "logo.gif", 400)):
        r = client.post("/api/v1/members/import", headers=org.h["admin"],
                        content_type="multipart/form-data",
                        data={"file": (io.BytesIO(content), name)})
        assert r.status_code == status
        assert r.get_json()["details"]["field"] == "file"
    missing = client.post("/api/v1/members/import", headers=org.h["admin"],
                          content_type="multipart/form-data", data={"dry_run": "true"})
    assert missing.status_code == 422
    assert missing.get_json()["details"]["field"] == "file"


def test_cli_import(runner, org, tmp_path, db_session):
    path = tmp_path / "名册.csv"
    path.write_bytes(csv_bytes([ZH_HEADER, ["王五", "A002", "第一支部", "", "", ""]], "gbk"))
    dry = runner.invoke(args=["import-members", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "created 1" in dry.output
    assert db_session.scalar(select(Member).where(Member.member_no == "A002")) is None
    real = runner.invoke(args=["import-members", str(path)])
    assert real.exit_code == 0
    assert "created 1" in real.output
    bad = tmp_path / "bad.csv"
    bad.write_bytes(csv_bytes([ZH_HEADER, ["", "A010", "第一支部", "", "", ""]], "utf-8"))
    refused = runner.invoke(args=["import-members", str(bad)])
    assert refused.exit_code != 0
    assert "第 2 行" in refused.output


def test_unsupported_file_is_its_own_error():
    assert issubclass(UnsupportedFile, DomainError)
    assert UnsupportedFile.status == 400


def test_title_row_above_the_header(db_session, org):
    content = xlsx([["2026 年第一支部党员名册"], [], ZH_HEADER,
                    ["王五", "A002", "第一支部", "", "正式", ""]])
    report = service.import_members(db_session, "m.xlsx", content, dry_run=True, actor=SYSTEM)
    assert report["created"] == 1
    assert report["rows"][0]["row"] == 4  # the row number a person sees in Excel
