"""Member profiles: behaviour figures and tags per member, computed from the ledger (DESIGN §10)."""
