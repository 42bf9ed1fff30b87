"""Segments: members chosen by criteria over their profiles, materialized with their counts (DESIGN §10)."""
