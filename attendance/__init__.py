"""Attendance: the event log of who was there, and the records derived from it."""

# Connect attendance's receivers of other domains' signals whenever the package is used.
from attendance import reactions  # noqa: F401  (import-time signal connections)
