"""Video: stream keys and recordings (filled in by the video work)."""
