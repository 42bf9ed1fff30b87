"""Logs, carrying the request id of the request being served: JSON (one object per line, for
machines) or text (one readable line per request, for a person at a terminal), by JIFEN_LOG_FORMAT."""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, TextIO

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# What the layers below learn about the request being served (the API key, the problem code), for
# its access log line: a dict the middleware creates per request and the layers fill in. A dict,
# not a variable each, because a value set in a copied context would not reach the middleware.
_request_context: ContextVar[dict[str, Any] | None] = ContextVar("request_context", default=None)

_STD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


def new_request_context() -> tuple[dict[str, Any], Any]:
    """A fresh context for one request, and the token that ends it."""
    context: dict[str, Any] = {}
    return context, _request_context.set(context)


def end_request_context(token: Any) -> None:
    _request_context.reset(token)


def request_context() -> dict[str, Any]:
    """The current request's context (a throwaway dict outside a request)."""
    context = _request_context.get()
    return {} if context is None else context


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            doc["request_id"] = rid
        doc.update(_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_LEVEL_COLOURS = {"WARNING": "\x1b[33m", "ERROR": "\x1b[31m", "CRITICAL": "\x1b[1;31m"}
_ACCESS_FIELDS = {"method", "path", "route", "status", "duration_ms", "code", "api_key_id"}


def status_colour(status: int) -> str:
    if status >= 500:
        return "\x1b[1;31m"  # bold red
    if status >= 400:
        return "\x1b[33m"  # yellow
    if status >= 300:
        return "\x1b[36m"  # cyan
    return "\x1b[32m"  # green


class TextFormatter(logging.Formatter):
    """`08:02:05.123 ledger  POST /v1/earn 201 3.2ms key=7 rid=...` for a request; other records as
    `time service level logger: message k=v ...`. Colours only when `colour` (a terminal)."""

    def __init__(self, service: str, *, colour: bool) -> None:
        super().__init__()
        self.service = service
        self.colour = colour

    def _paint(self, text: str, colour: str) -> str:
        return f"{colour}{text}{_RESET}" if self.colour else text

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        fields = _fields(record)
        rid = request_id_var.get()
        head = f"{self._paint(clock, _DIM)} {self.service:<10}"
        if record.name == "jifen.access" and "status" in fields:
            status = int(fields["status"])
            line = (
                f"{head} {fields.get('method', '-'):<6} {fields.get('path', '-')} "
                f"{self._paint(str(status), status_colour(status))} {fields.get('duration_ms', 0)}ms"
            )
            if fields.get("code"):
                line += f" {self._paint(str(fields['code']), status_colour(status))}"
            if fields.get("api_key_id") is not None:
                line += f" key={fields['api_key_id']}"
            rest = {k: v for k, v in fields.items() if k not in _ACCESS_FIELDS}
        else:
            level = record.levelname.lower()
            line = f"{head} {self._paint(level, _LEVEL_COLOURS.get(record.levelname, ''))} {record.name}: "
            line += record.getMessage()
            rest = fields
        line += "".join(f" {k}={v}" for k, v in rest.items())
        if rid:
            line += self._paint(f" rid={rid}", _DIM)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def make_formatter(service: str, fmt: str, stream: TextIO) -> logging.Formatter:
    if fmt == "text":
        return TextFormatter(service, colour=stream.isatty())
    return JsonFormatter(service)


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(make_formatter(service, fmt, sys.stdout))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
