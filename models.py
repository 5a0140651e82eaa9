"""Every domain's models, imported once so that metadata and Alembic see all tables."""

from accounts.models import ApiToken, User  # noqa: F401
from attendance import models as attendance_models  # noqa: F401
from org.models import Member, OrgUnit, Site  # noqa: F401
from sessions.models import CalendarFeed, Occurrence, StudySession  # noqa: F401
from video import models as video_models  # noqa: F401
