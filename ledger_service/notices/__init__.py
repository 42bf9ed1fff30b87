"""Expiry notices: `points.expiring` events ahead of each lot's expiry (DESIGN §10)."""
