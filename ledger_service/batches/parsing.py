"""Parsing a card-issuer file, line by line, into staged rows: pure functions, no database.

A card number never leaves this module in the clear: it becomes a keyed token (HMAC-SHA256 with
JIFEN_PII_KEY) that serves as the member_ref, and a reject reason never quotes a field's value.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from services.validation import EARLIEST, LATEST, storable_text

FIELDS = (
    "external_id", "type", "original_external_id", "program", "member_ref", "card_number", "amount_minor",
    "currency", "merchant_id", "mcc", "channel", "occurred_at", "points", "partner",
)  # fmt: skip
REQUIRED = ("external_id", "program")
MAX_POINTS = 2**63 - 1
MAX_AMOUNT = 10**15
FUTURE_SKEW = timedelta(minutes=5)

_PROGRAM = re.compile(r"^[A-Z0-9_]{2,16}$")
_TEXT = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_MEMBER = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
_MCC = re.compile(r"^[0-9]{4}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_CARD_SEPARATORS = re.compile(r"[ -]")
CHANNELS = frozenset({"pos", "online", "app"})


class HeaderError(ValueError):
    pass


@dataclass
class Row:
    """One staged line. `reject` is a reason code when the line cannot be posted."""

    line: int
    type: str | None = None
    external_id: str | None = None
    original_external_id: str | None = None
    program: str | None = None
    member_ref: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    merchant_id: str | None = None
    mcc: str | None = None
    channel: str | None = None
    occurred_at: datetime | None = None
    points: int | None = None
    rule_set_id: int | None = None
    reject: str | None = None
    partner: str | None = None  # the issuer partner funding an earn row (DESIGN §8)
    pending_days: int | None = None  # the matched rule's (DESIGN §10); None: the program's

    def record(self, batch_id: Any) -> tuple[Any, ...]:
        return (
            batch_id, self.line, self.type, self.external_id, self.original_external_id, self.program,
            self.member_ref, self.amount_minor, self.currency, self.merchant_id, self.mcc, self.channel,
            self.occurred_at, self.points, self.rule_set_id, self.reject, self.partner, self.pending_days,
        )  # fmt: skip


COPY_COLUMNS = (
    "batch_id", "line", "type", "external_id", "original_external_id", "program", "member_ref",
    "amount_minor", "currency", "merchant_id", "mcc", "channel", "occurred_at", "points", "rule_set_id",
    "reject", "partner", "pending_days",
)  # fmt: skip


class CardTokenizer:
    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def token(self, digits: str) -> str:
        mac = self._mac.copy()
        mac.update(digits.encode())
        return "card_" + mac.hexdigest()[:40]


def _int(value: str, low: int, high: int) -> int | None:
    if not value.isdigit() or len(value) > 19:
        return None
    n = int(value)
    return n if low <= n <= high else None


def parse_fields(line: int, f: dict[str, str], tokens: CardTokenizer, now: datetime) -> Row:
    """Validates one row's fields (strings; '' means absent)."""
    row = Row(line=line)

    def bad(reason: str) -> Row:
        row.reject = reason
        return row

    if not all(storable_text(v) for v in f.values()):  # an NDJSON line's \u0000 or lone \ud800
        return bad("invalid_text")
    row.external_id = f.get("external_id") or None
    if row.external_id is None or not _TEXT.match(row.external_id):
        row.external_id = None
        return bad("malformed_external_id")
    kind = f.get("type") or "earn"
    if kind not in ("earn", "reverse"):
        return bad("malformed_type")
    row.type = kind
    original = f.get("original_external_id") or None
    if original is not None and not _TEXT.match(original):
        return bad("malformed_original_external_id")
    row.original_external_id = original
    program = f.get("program") or ""
    if not _PROGRAM.match(program):
        return bad("malformed_program")
    row.program = program
    member, card = f.get("member_ref") or "", f.get("card_number") or ""
    if member and card:
        return bad("needs_member_ref_or_card_number")
    if not member and not card and kind == "earn":  # a reverse row finds its member through the original
        return bad("needs_member_ref_or_card_number")
    if card:
        digits = _CARD_SEPARATORS.sub("", card)
        if not digits.isdigit() or not 12 <= len(digits) <= 19:
            return bad("malformed_card_number")
        row.member_ref = tokens.token(digits)
    elif member:
        if not _MEMBER.match(member):
            return bad("malformed_member_ref")
        row.member_ref = member
    amount = f.get("amount_minor") or ""
    if amount:
        row.amount_minor = _int(amount, 1, MAX_AMOUNT)
        if row.amount_minor is None:
            return bad("bad_amount")
    currency = f.get("currency") or ""
    if currency:
        if not _CURRENCY.match(currency):
            return bad("bad_currency")
        row.currency = currency
    merchant = f.get("merchant_id") or ""
    if merchant:
        if len(merchant) > 64 or not _TEXT.match(merchant):
            return bad("malformed_merchant_id")
        row.merchant_id = merchant
    mcc = f.get("mcc") or ""
    if mcc:
        if not _MCC.match(mcc):
            return bad("malformed_mcc")
        row.mcc = mcc
    channel = f.get("channel") or ""
    if channel:
        if channel not in CHANNELS:
            return bad("malformed_channel")
        row.channel = channel
    occurred = f.get("occurred_at") or ""
    if occurred:
        try:
            at = datetime.fromisoformat(occurred)
        except ValueError:
            return bad("malformed_occurred_at")
        if at.tzinfo is None:
            return bad("malformed_occurred_at")
        if not EARLIEST <= at < LATEST:
            return bad("occurred_at_out_of_range")
        if at > now + FUTURE_SKEW:
            return bad("occurred_in_future")
        row.occurred_at = at
    else:
        row.occurred_at = now
    partner = f.get("partner") or ""
    if partner:
        if not _PROGRAM.match(partner):
            return bad("malformed_partner")
        row.partner = partner
    points = f.get("points") or ""
    if points:
        row.points = _int(points, 1, MAX_POINTS)
        if row.points is None:
            return bad("bad_points")
    if kind == "earn" and row.points is None and (row.amount_minor is None or row.currency is None):
        return bad("needs_points_or_amount_and_currency")
    return row


class LineSplitter:
    """Turns a byte stream into complete lines, whatever the chunk boundaries."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._rest + chunk
        lines = data.split(b"\n")
        self._rest = lines.pop()
        return lines

    def close(self) -> list[bytes]:
        rest, self._rest = self._rest, b""
        return [rest] if rest.strip() else []


class FileParser:
    """CSV (with a header line naming the columns) or NDJSON (one object per line)."""

    def __init__(self, fmt: str, tokens: CardTokenizer) -> None:
        self.fmt = fmt
        self.tokens = tokens
        self.header: list[str] | None = None
        self.line = 0  # lines of the file seen, blank ones and the header included: a row's `line`
        self.data_rows = 0

    def rows(self, lines: list[bytes], now: datetime | None = None) -> Iterator[Row]:
        now = now or datetime.now(UTC)
        for line_bytes in lines:
            self.line += 1
            raw = line_bytes[:-1] if line_bytes.endswith(b"\r") else line_bytes
            if not raw.strip():
                continue
            if self.fmt == "csv" and self.header is None:
                self.header = self._header(raw)
                continue
            self.data_rows += 1
            fields = self._fields(raw)
            if fields is None:
                yield Row(line=self.line, reject="malformed_line")
            else:
                yield parse_fields(self.line, fields, self.tokens, now)

    @staticmethod
    def _header(raw: bytes) -> list[str]:
        try:
            names = next(csv.reader([raw.decode("utf-8-sig")]))
        except (UnicodeDecodeError, StopIteration, csv.Error) as exc:
            raise HeaderError("The first line must be a CSV header naming the columns.") from exc
        names = [n.strip() for n in names]
        unknown = sorted(set(names) - set(FIELDS))
        missing = [n for n in REQUIRED if n not in names]
        if unknown or missing or len(set(names)) != len(names):
            raise HeaderError(
                f"CSV header: unknown columns {unknown}, missing {missing}; allowed: {', '.join(FIELDS)}."
            )
        return names

    def _fields(self, raw: bytes) -> dict[str, str] | None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if self.fmt == "csv":
            assert self.header is not None
            if '"' not in text and "\r" not in text and "\x00" not in text:
                # Nothing csv.reader treats specially: what it would give, without a reader per line.
                values = text.split(",")
            else:
                try:
                    values = next(csv.reader(io.StringIO(text)))
                except (csv.Error, StopIteration):
                    return None
            if len(values) != len(self.header):
                return None
            return {k: v.strip() for k, v in zip(self.header, values, strict=True)}
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict) or not set(obj) <= set(FIELDS):
            return None
        out: dict[str, str] = {}
        for k, v in obj.items():
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, str | int):
                return None
            out[k] = str(v)
        return out
