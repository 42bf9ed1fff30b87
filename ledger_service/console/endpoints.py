"""Console routes (DESIGN §11): parse, check the session, call one function of console/service.py,
render a template. Every page needs a signed-in key with ledger:read; every POST needs the
session's CSRF token and a same-site origin, and an action needs ledger:admin."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import quote, urlsplit
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, FastAPI, Form, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ledger_service.console import sagas
from ledger_service.console import service as console
from ledger_service.console.session import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    SESSION_COOKIE,
    Session,
    SessionCodec,
    cross_site,
    same_token,
)
from ledger_service.schemas_common import MemberRef, PartnerCode, ProgramCode
from ledger_service.segments.schemas import SegmentCode
from services.auth import KeyStore, Principal
from services.db import Database
from services.deps import Cursor, ProgramQuery
from services.errors import DomainError
from services.settings import Settings

HERE = FilePath(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)

READ_SCOPE = "ledger:read"
ACTION_SCOPE = "ledger:admin"
IDEM_KEY = re.compile(r"^console-[0-9a-f-]{36}$")

# The page may run our own script and no other; styles inline only for pygal's SVG <style>.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make the browser send Origin: null on our POSTs
    "Cache-Control": "no-store",
}


class ConsoleError(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


class SignInRequired(Exception):
    pass


@dataclass(frozen=True)
class User:
    principal: Principal
    session: Session

    @property
    def can_act(self) -> bool:
        return self.principal.has(ACTION_SCOPE)


def _fmt_points(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _fmt_cash(minor: int | None, currency: str) -> str:
    if minor is None:
        return "—"
    return f"{minor // 100:,}.{minor % 100:02d} {currency}"  # CNY and the demo currencies: 2 decimals


def _fmt_time(value: Any) -> str:
    """A datetime, or the RFC 3339 text another service answered with."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    return str(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"))


def _url_shown(url: str) -> str:
    """A webhook's destination without credentials or query (either may carry a token)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


templates.env.filters["points"] = _fmt_points
templates.env.filters["url_shown"] = _url_shown
templates.env.filters["cash"] = _fmt_cash
templates.env.filters["time"] = _fmt_time
templates.env.filters["bps"] = lambda v: "—" if v is None else f"{v / 100:.2f} %"


def _codec(request: Request) -> SessionCodec:
    codec: SessionCodec = request.app.state.console_sessions
    return codec


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def page(request: Request, template: str, user: User | None, status: int = 200, **context: Any) -> Response:
    response = templates.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "csrf": None if user is None else user.session.csrf,
            "new_key": lambda: f"console-{uuid.uuid4()}",
            **context,
        },
        status_code=status,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def redirect(path: str) -> Response:
    response = RedirectResponse(path, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def _local(path: str | None, default: str = "/console/") -> str:
    """Only a path of this console is a place to go back to (no open redirect)."""
    if path and path.startswith("/console/") and not path.startswith("//") and "\\" not in path:
        return path
    return default


async def current_user(request: Request) -> User:
    session = _codec(request).open(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequired()
    keys: KeyStore = request.app.state.keys
    principal = await keys.lookup(session.api_key)  # a revoked key ends its sessions
    if principal is None or not principal.has(READ_SCOPE):
        raise SignInRequired()
    return User(principal=principal, session=session)


Reader = Annotated[User, Depends(current_user)]


async def posted_by(request: Request, user: Reader, csrf: Annotated[str | None, Form()] = None) -> User:
    if cross_site(request):
        raise ConsoleError(403, "Refused", "A form posted from another site is refused.")
    if not same_token(user.session.csrf, csrf):
        raise ConsoleError(403, "Refused", "The form's security token is missing or stale; reload the page.")
    return user


async def acting_user(user: Annotated[User, Depends(posted_by)]) -> User:
    if not user.can_act:
        raise ConsoleError(403, "Not allowed", "Your API key may look but not act (it needs ledger:admin).")
    return user


Poster = Annotated[User, Depends(posted_by)]
Actor = Annotated[User, Depends(acting_user)]


def _idem(key: str) -> str:
    if not IDEM_KEY.match(key):
        raise ConsoleError(422, "Invalid form", "The form's idempotency key is malformed; reload the page.")
    return key


def _outcome_detail(body: str) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200]
    return str(data.get("detail") or data.get("title") or "Refused.")


# --- Sign-in and sign-out


@router.get("/login")
async def login_form(request: Request, next: str | None = None, error: str | None = None) -> Response:
    cookie, csrf = _codec(request).login_token()
    response = page(
        request,
        "login.html",
        None,
        next=_local(next),
        login_csrf=csrf,
        error=error,
        status=401 if error else 200,
    )
    response.set_cookie(
        LOGIN_COOKIE, cookie, max_age=LOGIN_TTL_S, path=COOKIE_PATH, httponly=True, samesite="strict",
        secure=_settings(request).console_cookie_secure,
    )  # fmt: skip
    return response


@router.post("/login")
async def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str | None, Form()] = None,
    next: Annotated[str | None, Form()] = None,
) -> Response:
    codec = _codec(request)
    if cross_site(request) or not same_token(codec.login_csrf(request.cookies.get(LOGIN_COOKIE)), csrf):
        raise ConsoleError(
            403, "Refused", "The sign-in form's security token is missing or stale; reload it."
        )
    keys: KeyStore = request.app.state.keys
    principal = await keys.lookup(api_key.strip()) if api_key.strip() else None
    if principal is None or not principal.has(READ_SCOPE):
        target = f"/console/login?error=1&next={quote(_local(next))}"
        return redirect(target)
    token, _ = codec.seal(api_key.strip())
    response = redirect(_local(next))
    settings = _settings(request)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=codec.ttl_s, path=COOKIE_PATH, httponly=True, samesite="strict",
        secure=settings.console_cookie_secure,
    )  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


@router.get("/logout")
async def logout_form(request: Request, user: Reader) -> Response:
    return page(request, "logout.html", user)


@router.post("/logout")
async def logout(request: Request, _: Poster) -> Response:
    response = redirect("/console/login")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


# --- Pages

# A list for one program chosen from a menu (or for all the key sees), a page at a time:
# fetch(db, principal, program, cursor) gives the template's `data`.
Listing = Callable[[Database, Principal, str | None, str | None], Awaitable[Any]]


def _program_listing(template: str, fetch: Listing) -> Callable[..., Awaitable[Response]]:
    async def listing(
        request: Request, user: Reader, program: ProgramQuery = None, cursor: Cursor = None
    ) -> Response:
        data = await fetch(request.app.state.db, user.principal, program, cursor)
        return page(request, template, user, data=data)

    return listing


router.get("/")(_program_listing("overview.html", console.overview))


@router.get("/lookup")
async def lookup(
    user: Reader, program: Annotated[ProgramCode, Query()], member_ref: Annotated[MemberRef, Query()]
) -> Response:
    user.principal.require_program(program)
    return redirect(f"/console/programs/{program}/members/{quote(member_ref, safe='')}")


@router.get("/programs/{code}")
async def program_page(request: Request, user: Reader, code: ProgramCode) -> Response:
    data = await console.program_page(request.app.state.db, request.app.state.rules, user.principal, code)
    return page(request, "program.html", user, data=data)


@router.get("/programs/{code}/members/{member_ref}")
async def member_page(request: Request, user: Reader, code: ProgramCode, member_ref: MemberRef) -> Response:
    data = await console.member_page(request.app.state.db, user.principal, code, member_ref)
    return page(request, "member.html", user, data=data, notice=request.query_params.get("notice"))


@router.get("/batches")
async def batches(
    request: Request,
    user: Reader,
    status: Annotated[str | None, Query(pattern="^(receiving|received|processing|completed|failed)$")] = None,
    before: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    data = await console.batch_list(request.app.state.db, user.principal, status, before)
    return page(request, "batches.html", user, data=data, status_filter=status)


@router.get("/batches/{batch_id}")
async def batch_page(
    request: Request, user: Reader, batch_id: UUID, reason: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    data = await console.batch_page(request.app.state.db, user.principal, batch_id, reason)
    return page(request, "batch.html", user, data=data)


@router.get("/batches/{batch_id}/progress")
async def batch_progress(request: Request, user: Reader, batch_id: UUID) -> Response:
    """What the batch page's script polls while a batch runs."""
    data = await console.batch_page(request.app.state.db, user.principal, batch_id, None)
    b = data.batch
    body = {
        "status": b.status,
        "rows": b.rows,
        "processed": b.processed,
        "posted": b.posted,
        "duplicates": b.duplicates,
        "rejected": b.rejected,
        "points_posted": b.points_posted,
        "progress": b.progress,
        "done": b.status in ("completed", "failed"),
    }
    return Response(orjson.dumps(body), media_type="application/json", headers=SECURITY_HEADERS)


@router.get("/sagas")
async def sagas_page(request: Request, user: Reader) -> Response:
    settings = _settings(request)
    conversions, redemptions = await sagas.unfinished(
        settings.conversion_base_url(),
        settings.catalog_base_url(),
        user.session.api_key,
        request.headers.get("x-request-id"),
    )
    return page(
        request,
        "sagas.html",
        user,
        conversions=conversions,
        redemptions=redemptions,
        notice=request.query_params.get("notice"),
    )


@router.post("/sagas/{service}/{saga_id}/retry")
async def retry_saga(
    request: Request,
    user: Poster,
    service: Annotated[str, Path(pattern="^(conversion|catalog)$")],
    saga_id: UUID,
) -> Response:
    """Through the owning service's API, with the operator's key (which needs `<service>:admin`)."""
    if not user.principal.has(f"{service}:admin"):
        raise ConsoleError(403, "Not allowed", f"Retrying needs {service}:admin.")
    settings = _settings(request)
    base = settings.conversion_base_url() if service == "conversion" else settings.catalog_base_url()
    status, detail = await sagas.retry(
        base, service, str(saga_id), user.session.api_key, request.headers.get("x-request-id")
    )
    if status != 200:
        raise ConsoleError(status, f"The {service} service did not retry it", detail)
    return redirect(f"/console/sagas?notice={quote('retried-' + detail)}")


@router.get("/webhooks")
async def webhooks(request: Request, user: Reader) -> Response:
    data = await console.webhook_page(request.app.state.db, user.principal)
    return page(request, "webhooks.html", user, data=data)


def _attachment(filename: str) -> dict[str, str]:
    return {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'}


def _csv(body: str, filename: str) -> Response:
    return Response(body, media_type="text/csv", headers=_attachment(filename))


router.get("/partners")(_program_listing("partners.html", console.partner_list))


@router.get("/partners/{code}")
async def partner_page(request: Request, user: Reader, code: PartnerCode, cursor: Cursor = None) -> Response:
    data = await console.partner_page(request.app.state.db, user.principal, code, cursor)
    return page(request, "partner.html", user, data=data)


@router.get("/partners/{code}/statements.csv")
async def statements_csv(
    request: Request, user: Reader, code: PartnerCode, cursor: Cursor = None
) -> Response:
    body = await console.statements_csv(request.app.state.db, user.principal, code, cursor)
    return _csv(body, f"{code}-statements.csv")


@router.get("/settlements")
async def settlements(request: Request, user: Reader, cursor: Cursor = None) -> Response:
    data = await console.settlement_list(request.app.state.db, user.principal, cursor)
    return page(request, "settlements.html", user, data=data)


@router.get("/settlements/{settlement_id}")
async def settlement_page(request: Request, user: Reader, settlement_id: UUID) -> Response:
    data = await console.settlement(request.app.state.db, user.principal, settlement_id)
    return page(request, "settlement.html", user, s=data)


@router.get("/settlements/{settlement_id}/lines.csv")
async def settlement_csv(request: Request, user: Reader, settlement_id: UUID) -> Response:
    """The same CSV as GET /v1/settlements/{id} with `Accept: text/csv`."""
    body = await console.settlement_csv(request.app.state.db, user.principal, settlement_id)
    return _csv(body, f"settlement-{settlement_id}.csv")


router.get("/segments")(_program_listing("segments.html", console.segment_list))


@router.get("/programs/{code}/segments/{segment}")
async def segment_page(
    request: Request, user: Reader, code: ProgramCode, segment: SegmentCode, cursor: Cursor = None
) -> Response:
    """Sizes for any reader; the members themselves only for ledger:admin, as on the API."""
    data = await console.segment_page(
        request.app.state.db, user.principal, code, segment, cursor, with_members=user.can_act
    )
    return page(request, "segment.html", user, data=data, notice=request.query_params.get("notice"))


@router.get("/programs/{code}/segments/{segment}/members.csv")
async def segment_export(request: Request, user: Reader, code: ProgramCode, segment: SegmentCode) -> Response:
    if not user.can_act:
        raise ConsoleError(
            403, "Not allowed", "A segment's members are for ledger:admin keys, as on the API."
        )
    lines = await console.segment_export(request.app.state.db, user.principal, code, segment)
    return StreamingResponse(lines, media_type="text/csv", headers=_attachment(f"{code}-{segment}.csv"))


# --- Actions (ledger:admin): the API's write path, with the form's idempotency key


@router.post("/holds/{hold_id}/void")
async def void_hold(
    request: Request,
    user: Actor,
    hold_id: UUID,
    idempotency_key: Annotated[str, Form()],
    back: Annotated[str | None, Form()] = None,
) -> Response:
    outcome = await console.void_hold(
        request.app.state.engine, user.principal, hold_id, _idem(idempotency_key)
    )
    if outcome.status >= 400:
        raise ConsoleError(outcome.status, "The ledger refused", _outcome_detail(outcome.body))
    return redirect(_with_notice(_local(back), "hold-voided"))


@router.post("/transactions/{transaction_id}/reverse")
async def reverse(
    request: Request,
    user: Actor,
    transaction_id: UUID,
    idempotency_key: Annotated[str, Form()],
    reason: Annotated[str, Form()] = "",
    points: Annotated[str, Form()] = "",
    back: Annotated[str | None, Form()] = None,
) -> Response:
    try:
        amount = int(points) if points.strip() else None
        outcome = await console.reverse(
            request.app.state.engine,
            user.principal,
            transaction_id,
            amount,
            reason.strip(),
            _idem(idempotency_key),
        )
    except (ValueError, ValidationError) as exc:
        if isinstance(exc, ValidationError):
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        else:
            detail = "Points must be a whole number."
        raise ConsoleError(422, "Invalid reversal", detail) from None
    if outcome.status >= 400:
        raise ConsoleError(outcome.status, "The ledger refused", _outcome_detail(outcome.body))
    return redirect(_with_notice(_local(back), "reversed"))


@router.post("/jobs/expire")
async def expire(request: Request, user: Actor, back: Annotated[str | None, Form()] = None) -> Response:
    if user.principal.programs is not None:
        raise ConsoleError(
            403, "Not allowed", "Expiry runs for every program; a key limited to programs may not run it."
        )
    run = await console.expire_now(request.app.state.db)
    return redirect(_with_notice(_local(back), f"expired-{run.expired_points}"))


@router.post("/programs/{code}/segments/{segment}/refresh")
async def refresh_segment(request: Request, user: Actor, code: ProgramCode, segment: SegmentCode) -> Response:
    """Re-evaluating is idempotent by nature: a second run finds nobody to move."""
    done = await console.refresh_segment(request.app.state.db, user.principal, code, segment)
    notice = f"refreshed-{done.member_count}-{done.entered}-{done.left}"
    return redirect(_with_notice(f"/console/programs/{code}/segments/{segment}", notice))


def _with_notice(path: str, notice: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}notice={quote(notice)}"


# --- Wiring


def install(app: FastAPI) -> None:
    """Adds the console to the ledger app: routes, its static files, and error pages for /console
    in place of problem+json (the API's handlers answer everything else as before)."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.get("/console", include_in_schema=False)
    async def console_root() -> Response:
        return redirect("/console/")

    previous = dict(app.exception_handlers)

    def _console(request: Request) -> bool:
        return request.url.path.startswith("/console")

    async def _user_or_none(request: Request) -> User | None:
        try:
            return await current_user(request)
        except SignInRequired:
            return None

    async def on_sign_in(request: Request, _: Exception) -> Response:
        if request.url.path.endswith("/progress"):  # the batch page's poll: an answer its script reads
            return Response(b'{"error": "sign in again"}', 401, media_type="application/json")
        if request.method == "GET":
            return redirect(f"/console/login?next={quote(_local(request.url.path), safe='/')}")
        return page(request, "error.html", None, status=401, title="Sign in again",
                    detail="Your session has ended or is not valid; nothing was changed.")  # fmt: skip

    async def on_console_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleError)
        return page(request, "error.html", await _user_or_none(request), status=exc.status, title=exc.title,
                    detail=exc.detail)  # fmt: skip

    def fallback(kind: type[Exception]) -> Any:
        async def handler(request: Request, exc: Exception) -> Response:
            if not _console(request) or request.url.path.startswith("/console/static"):
                answer: Response = await previous[kind](request, exc)
                return answer
            if isinstance(exc, DomainError):
                status, detail = exc.status, exc.detail
            elif isinstance(exc, RequestValidationError):
                status = 422
                detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            else:
                assert isinstance(exc, StarletteHTTPException)
                status, detail = exc.status_code, str(exc.detail)
            user = await _user_or_none(request)
            return page(request, "error.html", user, status=status, title="Cannot show this", detail=detail)

        return handler

    app.add_exception_handler(SignInRequired, on_sign_in)
    app.add_exception_handler(ConsoleError, on_console_error)
    for kind in (DomainError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(kind, fallback(kind))
