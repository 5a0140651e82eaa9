"""API schemas of the org domain: org units, sites, members, member import."""

from flask_smorest.fields import Upload
from marshmallow import Schema, fields, validate

from core.timeutil import DEFAULT_TZ
from org.models import MEMBER_CATEGORIES, MEMBER_STATUSES, ORG_UNIT_KINDS

_name = validate.Length(min=1, max=200)


# --- org units -------------------------------------------------------------------------


class OrgUnitIn(Schema):
    name = fields.String(required=True, validate=_name)
    kind = fields.String(required=True, validate=validate.OneOf(ORG_UNIT_KINDS))
    parent_id = fields.Integer(load_default=None, allow_none=True)


class OrgUnitPatch(Schema):
    """Only the keys given are changed; `parent_id` moves the unit (null: to the top)."""

    name = fields.String(validate=_name)
    kind = fields.String(validate=validate.OneOf(ORG_UNIT_KINDS))
    parent_id = fields.Integer(allow_none=True)


class OrgUnitOut(Schema):
    id = fields.Integer()
    name = fields.String()
    kind = fields.String()
    parent_id = fields.Integer(allow_none=True)
    #: Materialized path of ids from the root, "/1/4/9/".
    path = fields.String()
    created_at = fields.DateTime(format="iso")


class OrgUnitQuery(Schema):
    parent_id = fields.Integer()
    kind = fields.String(validate=validate.OneOf(ORG_UNIT_KINDS))


# --- sites -----------------------------------------------------------------------------


class SiteIn(Schema):
    name = fields.String(required=True, validate=_name)
    org_unit_id = fields.Integer(required=True)
    timezone = fields.String(load_default=DEFAULT_TZ, validate=validate.Length(max=64),
                             metadata={"description": "IANA time zone, e.g. Asia/Shanghai"})
    location = fields.String(load_default="", validate=validate.Length(max=300))
    capacity = fields.Integer(load_default=None, allow_none=True,
                              validate=validate.Range(min=0))
    checkin_networks = fields.String(load_default="", validate=validate.Length(max=1000),
                                     metadata={"description": "QR check-in only from these "
                                               "networks (CIDRs, one per line); empty: any"})
    checkin_code_required = fields.Boolean(load_default=False, metadata={
        "description": "QR check-in also asks for the 4-digit code shown beside the QR"})


class SitePatch(Schema):
    name = fields.String(validate=_name)
    org_unit_id = fields.Integer()
    timezone = fields.String(validate=validate.Length(max=64))
    location = fields.String(validate=validate.Length(max=300))
    capacity = fields.Integer(allow_none=True, validate=validate.Range(min=0))
    active = fields.Boolean()
    checkin_networks = fields.String(validate=validate.Length(max=1000))
    checkin_code_required = fields.Boolean()


class SiteOut(Schema):
    id = fields.Integer()
    name = fields.String()
    location = fields.String()
    org_unit_id = fields.Integer()
    timezone = fields.String()
    capacity = fields.Integer(allow_none=True)
    active = fields.Boolean()
    checkin_networks = fields.String()
    checkin_code_required = fields.Boolean()
    created_at = fields.DateTime(format="iso")


class SiteQuery(Schema):
    org_unit_id = fields.Integer(metadata={"description": "this unit and its subtree"})
    active = fields.Boolean()


class ScreenTokenOut(Schema):
    token = fields.String(required=True)
    site_id = fields.Integer()
    screen_url_hint = fields.String(
        metadata={"description": "The meeting-room screen's standing kiosk URL with the "
                                 "token: it shows the current or next lesson by itself."})
    expires_at = fields.DateTime(
        metadata={"description": "After this the screen is refused until the site's tokens "
                                 "are renewed (YUANJIAO_SCREEN_TOKEN_DAYS after issue)."})


class ScreenTokensRevoked(Schema):
    revoked = fields.Integer()


class ScreenTokensRenewed(Schema):
    renewed = fields.Integer(metadata={"description": "unrevoked tokens renewed"})
    expires_at = fields.DateTime(metadata={"description": "their new expiry"})


# --- members ---------------------------------------------------------------------------


class MemberIn(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    member_no = fields.String(required=True, validate=validate.Length(min=1, max=50))
    org_unit_id = fields.Integer(required=True)
    home_site_id = fields.Integer(load_default=None, allow_none=True)
    category = fields.String(load_default="full", validate=validate.OneOf(MEMBER_CATEGORIES))
    phone = fields.String(load_default="", validate=validate.Length(max=30))


class MemberPatch(Schema):
    """Only the keys given are changed; `status: "transferred"` records a transfer out."""

    name = fields.String(validate=validate.Length(min=1, max=100))
    member_no = fields.String(validate=validate.Length(min=1, max=50))
    org_unit_id = fields.Integer()
    home_site_id = fields.Integer(allow_none=True)
    category = fields.String(validate=validate.OneOf(MEMBER_CATEGORIES))
    phone = fields.String(validate=validate.Length(max=30))
    status = fields.String(validate=validate.OneOf(MEMBER_STATUSES))


class MemberOut(Schema):
    id = fields.Integer()
    name = fields.String()
    member_no = fields.String()
    org_unit_id = fields.Integer()
    home_site_id = fields.Integer(allow_none=True)
    category = fields.String()
    phone = fields.String()
    status = fields.String()
    created_at = fields.DateTime(format="iso")
    updated_at = fields.DateTime(format="iso")


class MemberQuery(Schema):
    org_unit_id = fields.Integer(metadata={"description": "this unit and its subtree"})
    site_id = fields.Integer(metadata={"description": "home site"})
    category = fields.String(validate=validate.OneOf(MEMBER_CATEGORIES))
    status = fields.String(validate=validate.OneOf(MEMBER_STATUSES))
    q = fields.String(validate=validate.Length(max=100),
                      metadata={"description": "search in name, member number and phone"})


# --- member import ---------------------------------------------------------------------


class MemberImportFile(Schema):
    file = Upload(required=True, metadata={"description": "xlsx or csv (UTF-8 or GBK)"})


class MemberImportForm(Schema):
    dry_run = fields.Boolean(load_default=False)


class MemberImportRow(Schema):
    row = fields.Integer()
    member_no = fields.String()
    name = fields.String()
    action = fields.String(metadata={"description": "create, update or unchanged"})
    member_id = fields.Integer(allow_none=True)
    changes = fields.Dict(keys=fields.String(), values=fields.Raw(),
                          metadata={"description": "field -> {old, new}"})


class MemberImportReport(Schema):
    filename = fields.String()
    format = fields.String()
    dry_run = fields.Boolean()
    total = fields.Integer()
    created = fields.Integer()
    updated = fields.Integer()
    unchanged = fields.Integer()
    ignored_columns = fields.List(fields.String())
    rows = fields.List(fields.Nested(MemberImportRow))
