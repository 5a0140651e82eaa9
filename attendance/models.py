"""Attendance: the event log and derived records (filled in by the attendance work)."""
