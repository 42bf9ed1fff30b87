"""`jifen partners ...` and `jifen settle`: operators' commands, as clients of the ledger's API (the same
checks, locks and idempotency as any caller; safe next to a running ledger or a second `jifen settle`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any

import httpx

from services.settings import Settings


def _client(args: argparse.Namespace) -> httpx.Client:
    settings = Settings()
    key = (
        args.key
        or os.environ.get("JIFEN_API_KEY")
        or (settings.data_dir / "admin-api-key").read_text().strip()
    )
    return httpx.Client(
        base_url=args.url or settings.ledger_base_url(),
        headers={"Authorization": f"Bearer {key}"},
        timeout=600,
    )


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with _client(args) as http:
        r = http.request(method, path, **kwargs)
    if r.status_code >= 400:
        print(f"error: {r.status_code} {r.text}", file=sys.stderr)
        raise SystemExit(1)
    return r


def _show(r: httpx.Response) -> int:
    print(json.dumps(r.json(), indent=2, ensure_ascii=False))
    return 0


def _price(text: str) -> dict[str, int]:
    """`100:80`: 100 points for 80 minor units."""
    points, _, cash = text.partition(":")
    try:
        return {"points": int(points), "cash_minor": int(cash)}
    except ValueError:
        raise argparse.ArgumentTypeError("a price is POINTS:CASH_MINOR, e.g. 100:80") from None


def cmd_list(args: argparse.Namespace) -> int:
    return _show(_call(args, "GET", "/v1/partners", params={"limit": 500}))


def cmd_create(args: argparse.Namespace) -> int:
    body = {"code": args.code, "name": args.name or args.code, "roles": args.roles.split(",")}
    return _show(_call(args, "POST", "/v1/partners", json=body))


def cmd_status(args: argparse.Namespace) -> int:
    status = "suspended" if args.partners_command == "suspend" else "active"
    return _show(_call(args, "PATCH", f"/v1/partners/{args.code}", json={"status": status}))


def cmd_terms(args: argparse.Namespace) -> int:
    if args.issue is None:
        return _show(_call(args, "GET", f"/v1/partners/{args.code}/terms"))
    body: dict[str, Any] = {
        "issue_price": args.issue,
        "accept_price": args.accept or args.issue,
        "currency": args.currency,
        "period": args.period,
        "funding": "prepaid" if args.prepaid else "postpaid",
    }
    if args.credit_limit is not None:
        body["credit_limit_minor"] = args.credit_limit
    if args.effective_from:
        body["effective_from"] = args.effective_from
    return _show(_call(args, "PUT", f"/v1/partners/{args.code}/terms/{args.program}", json=body))


def cmd_fund(args: argparse.Namespace) -> int:
    body = {
        "program": args.program,
        "points": args.points,
        "cash_minor": args.cash_minor,
        "reference": args.reference,
    }
    headers = {"Idempotency-Key": args.idempotency_key or f"fund-{uuid.uuid4()}"}
    return _show(_call(args, "POST", f"/v1/partners/{args.code}/fundings", json=body, headers=headers))


def cmd_position(args: argparse.Namespace) -> int:
    return _show(_call(args, "GET", f"/v1/partners/{args.code}/position"))


def cmd_statements(args: argparse.Namespace) -> int:
    headers = {"Accept": "text/csv"} if args.csv else {}
    r = _call(args, "GET", f"/v1/partners/{args.code}/statements", params={"limit": 500}, headers=headers)
    if args.csv:
        sys.stdout.write(r.text)
        return 0
    return _show(r)


def cmd_settle(args: argparse.Namespace) -> int:
    params = {"as_of": args.as_of} if args.as_of else {}
    r = _call(args, "POST", "/v1/settlements", params=params)
    body = r.json()
    for line in body["lines"]:
        print(
            f"{line['partner']:<16} {line['program']:<16} {line['period_start']} .. {line['period_end']}"
            f"  issued {line['points_issued'] - line['points_issued_reversed']:>12,}"
            f"  accepted {line['points_accepted'] - line['points_accepted_reversed']:>12,}"
            f"  net {line['net_minor']:>14,} {line['currency']}"
        )
    print(f"settlement {body['id']} as of {body['as_of']}: {len(body['lines'])} statement lines closed")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="ledger base URL (default from settings)")
    p.add_argument("--key", default=None, help="API key (default JIFEN_API_KEY or the admin key)")


def register_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    partners = sub.add_parser("partners", help="coalition partners: create, terms, fund, suspend, statements")
    psub = partners.add_subparsers(dest="partners_command", required=True)
    p = psub.add_parser("list", help="every partner")
    p.set_defaults(func=cmd_list)
    p = psub.add_parser("create", help="register a partner")
    p.add_argument("code")
    p.add_argument("--name", default=None)
    p.add_argument("--roles", default="issuer", help="issuer, acceptor or issuer,acceptor")
    p.set_defaults(func=cmd_create)
    for name in ("suspend", "activate"):
        p = psub.add_parser(name, help=f"{name} a partner")
        p.add_argument("code")
        p.set_defaults(func=cmd_status)
    p = psub.add_parser("terms", help="show a partner's terms, or add a version for a program")
    p.add_argument("code")
    p.add_argument("program", nargs="?")
    p.add_argument("--issue", type=_price, default=None, help="issue price POINTS:CASH_MINOR")
    p.add_argument("--accept", type=_price, default=None, help="accept price POINTS:CASH_MINOR")
    p.add_argument("--currency", default="CNY")
    p.add_argument("--period", choices=("daily", "weekly", "monthly"), default="monthly")
    p.add_argument("--prepaid", action="store_true", help="prepaid (default postpaid)")
    p.add_argument("--credit-limit", type=int, default=None, help="postpaid credit limit, minor units")
    p.add_argument("--effective-from", default=None, help="RFC 3339 (default now)")
    p.set_defaults(func=cmd_terms)
    p = psub.add_parser("fund", help="a prepaid partner buys points")
    p.add_argument("code")
    p.add_argument("program")
    p.add_argument("--points", type=int, required=True)
    p.add_argument("--cash-minor", type=int, required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--idempotency-key", default=None)
    p.set_defaults(func=cmd_fund)
    p = psub.add_parser("position", help="open periods, prepaid points and credit used")
    p.add_argument("code")
    p.set_defaults(func=cmd_position)
    p = psub.add_parser("statements", help="closed statement lines")
    p.add_argument("code")
    p.add_argument("--csv", action="store_true")
    p.set_defaults(func=cmd_statements)
    for p in psub.choices.values():
        _common(p)
    settle = sub.add_parser("settle", help="close every partner period that ended by --as-of (default now)")
    settle.add_argument("--as-of", default=None, help="RFC 3339")
    _common(settle)
    settle.set_defaults(func=cmd_settle)
