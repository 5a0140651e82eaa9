"""API schemas of the accounts domain."""

from marshmallow import Schema, fields, validate

from accounts.models import ROLES
from accounts.passwords import MIN_LENGTH


class TokenRequest(Schema):
    username = fields.String(required=True)
    password = fields.String(required=True, load_only=True)


class TokenResponse(Schema):
    token = fields.String(required=True)
    expires_at = fields.DateTime()


class UserIn(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=80))
    password = fields.String(required=True, load_only=True,
                             validate=validate.Length(min=MIN_LENGTH))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    display_name = fields.String(load_default="")
    org_unit_id = fields.Integer(load_default=None, allow_none=True)
    site_id = fields.Integer(load_default=None, allow_none=True)
    member_id = fields.Integer(load_default=None, allow_none=True)


class UserOut(Schema):
    id = fields.Integer()
    username = fields.String()
    display_name = fields.String()
    role = fields.String()
    org_unit_id = fields.Integer(allow_none=True)
    site_id = fields.Integer(allow_none=True)
    member_id = fields.Integer(allow_none=True)
    active = fields.Boolean()


class UserPatch(Schema):
    display_name = fields.String()
    active = fields.Boolean()
    password = fields.String(load_only=True, validate=validate.Length(min=MIN_LENGTH))
    #: Required to change one's own password (a token alone does not suffice).
    current_password = fields.String(load_only=True)
    locale = fields.String(validate=validate.OneOf(["zh", "en", ""]))
    #: A manager moves a user to another role or scope (never himself): every session,
    #: remember cookie and API token of that user ends.
    role = fields.String(validate=validate.OneOf(ROLES))
    org_unit_id = fields.Integer(allow_none=True)
    site_id = fields.Integer(allow_none=True)
    member_id = fields.Integer(allow_none=True)


class AuditEntryOut(Schema):
    id = fields.Integer()
    at = fields.DateTime()
    actor_id = fields.Integer(allow_none=True)
    action = fields.String()
    username = fields.String()
    target = fields.String()
    address = fields.String()
    details = fields.Dict()
