"""The ops console (DESIGN §11): server-rendered pages under /console on the ledger service."""
