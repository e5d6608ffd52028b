"""The console's web app (FastAPI, Jinja2 templates, its own static assets): the case queue,
case pages, labels, assignment; a built-in login or identities from a trusted OIDC proxy;
viewer < analyst < admin; CSRF tokens on every form; strict security headers.

Nothing is loaded from elsewhere at run time: the page's CSS and script are served from
``static/``, and the Content-Security-Policy allows nothing else."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time,
# and they name dependencies made inside create_app.
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.middleware.sessions import SessionMiddleware

from fraud_console.auth import (
    Identity,
    LoginThrottle,
    Untrusted,
    csrf_ok,
    csrf_token,
    from_proxy,
    verify_password,
)
from fraud_console.limits import BoundedRequests
from fraud_console.metrics import ConsoleMetrics
from fraud_console.settings import ConsoleSettings, Role
from fraud_console.store import (
    STATUSES,
    VERDICTS,
    QueueFilter,
    Store,
    Verdict,
    performance,
)

HERE = Path(__file__).parent
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# A dummy hash to verify against when the user does not exist: a login takes as long for an
# unknown name as for a wrong password.
_NOBODY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


class NeedLogin(Exception):
    pass


def create_app(
    settings: ConsoleSettings, store: Store, metrics: ConsoleMetrics | None = None
) -> FastAPI:
    app = FastAPI(title="fraud-detector console", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals["verdicts"] = VERDICTS
    templates.env.globals["statuses"] = STATUSES
    latency = (ConsoleMetrics() if metrics is None else metrics).request_seconds
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def secure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        latency.labels(getattr(route, "path", "other")).observe(time.perf_counter() - started)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret.get_secret_value(),
        session_cookie="fraud_console",
        max_age=8 * 3600,
        same_site="strict",
        https_only=settings.secure_cookies,
    )

    app.add_middleware(BoundedRequests)  # outermost: before the session is even read
    # Failed logins: 5 per name and 30 per client address (an ingress is one address for
    # everyone) in 5 minutes, then 429 until the window passes.
    by_name, by_client = LoginThrottle(limit=5), LoginThrottle(limit=30)

    def who(request: Request) -> Identity:
        auth = settings.auth
        if auth.mode == "proxy":
            assert auth.proxy is not None
            client = request.client.host if request.client else None
            try:
                identity = from_proxy(client, request.headers, auth.proxy)
            except Untrusted as exc:
                raise HTTPException(403, "identity headers from an untrusted client") from exc
            if identity is None:
                raise HTTPException(403, "no console role for this user")
            return identity
        name = request.session.get("user")
        user = auth.users.get(name) if isinstance(name, str) else None
        if user is None:
            raise NeedLogin
        return Identity(str(name), user.role)

    def needs(role: Role) -> Callable[[Request], Identity]:
        def check(request: Request) -> Identity:
            identity = who(request)
            if not identity.may(role):
                raise HTTPException(403, f"{role} role needed")
            return identity

        return check

    async def checked_form(request: Request) -> FormData:
        form = await request.form()
        if not csrf_ok(request.session, str(form.get("csrf") or "")):
            raise HTTPException(403, "stale or missing form token: reload the page")
        if any("\x00" in str(value) for _, value in form.multi_items()):
            raise HTTPException(400, "NUL characters are refused")
        return form

    @app.exception_handler(NeedLogin)
    async def to_login(request: Request, _exc: NeedLogin) -> Response:
        return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", 303)

    def page(request: Request, name: str, identity: Identity | None, **context: Any) -> Response:
        return templates.TemplateResponse(
            request,
            name,
            {"me": identity, "csrf": csrf_token(request.session), **context},
        )

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/readyz", response_class=PlainTextResponse)
    def readyz() -> Response:
        ready, why = store.ready()
        return PlainTextResponse(why, status_code=200 if ready else 503)

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/") -> Response:
        if settings.auth.mode == "proxy":
            return RedirectResponse("/", 303)
        return page(request, "login.html", None, next=_local(next), error=None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await checked_form(request)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        client = request.client.host if request.client else "-"
        if by_name.blocked(name) or by_client.blocked(client):
            raise HTTPException(429, "too many failed logins: try again in a few minutes")
        user = settings.auth.users.get(name)
        stored = user.password.get_secret_value() if user else _NOBODY
        if not verify_password(password, stored) or user is None:
            by_name.failed(name)
            by_client.failed(client)
            return page(
                request, "login.html", None, next=_local(str(form.get("next", "/"))),
                error="Wrong name or password.",
            )  # fmt: skip
        by_name.succeeded(name)
        request.session.clear()
        request.session["user"] = name
        return RedirectResponse(_local(str(form.get("next", "/"))), 303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await checked_form(request)
        request.session.clear()
        return RedirectResponse("/login", 303)

    @app.get("/", response_class=HTMLResponse)
    def queue(
        request: Request,
        me: Annotated[Identity, Depends(needs("viewer"))],
        f: Annotated[QueueFilter, Depends(queue_filter)],
    ) -> Response:
        result = store.queue(f, settings.page_size)
        nxt = None
        if result.more and result.rows:
            key, tx = result.rows[-1].cursor(f.sort)
            params = {k: v for k, v in request.query_params.items() if k not in ("ak", "at")}
            nxt = "/?" + urlencode({**params, "ak": key, "at": tx})
        return page(request, "queue.html", me, page=result, f=f, next_page=nxt,
                    query=str(request.url.query))  # fmt: skip

    @app.get("/performance", response_class=HTMLResponse)
    def performance_page(
        request: Request, me: Annotated[Identity, Depends(needs("viewer"))], days: int = 30
    ) -> Response:
        days = max(1, min(days, 365))
        since = datetime.now(UTC) - timedelta(days=days)
        perf = performance(store.pool, since)
        data = {
            "precision": {
                r: [[d, f / n if n else None] for d, n, f in rows]
                for r, rows in perf.precision_by_reason.items()
            },
            "alerts": perf.alerts_by_day,
            "scores": perf.scores,
            "pr": perf.pr_curve,
        }
        return page(request, "performance.html", me, perf=perf, days=days, data=data)

    @app.get("/cases/{transaction_id}", response_class=HTMLResponse)
    def case_page(
        request: Request, transaction_id: str, me: Annotated[Identity, Depends(needs("viewer"))]
    ) -> Response:
        case = store.case(transaction_id)
        if case is None:
            raise HTTPException(404, "no such case")
        back = request.query_params.get("back", "")
        return page(request, "case.html", me, case=case, back=back)

    @app.post("/cases/{transaction_id}/label")
    async def label(
        request: Request,
        transaction_id: str,
        me: Annotated[Identity, Depends(needs("analyst"))],
    ) -> Response:
        form = await checked_form(request)
        verdict = _verdict(form)
        note = str(form.get("note", ""))[:2000]
        if not store.label(transaction_id, verdict, note, me.name):  # type: ignore[arg-type]
            raise HTTPException(404, "no such case")
        return RedirectResponse(_queue_url(str(form.get("back", ""))), 303)

    @app.post("/label")
    async def bulk_label(
        request: Request, me: Annotated[Identity, Depends(needs("analyst"))]
    ) -> Response:
        form = await checked_form(request)
        verdict = _verdict(form)
        for tx in form.getlist("tx")[:500]:
            store.label(str(tx), verdict, "", me.name)
        return RedirectResponse(_queue_url(str(form.get("back", ""))), 303)

    @app.post("/cases/{transaction_id}/assign")
    async def assign(
        request: Request, transaction_id: str, me: Annotated[Identity, Depends(needs("analyst"))]
    ) -> Response:
        form = await checked_form(request)
        store.assign([transaction_id], None if form.get("to") == "nobody" else me.name, me.name)
        return RedirectResponse(f"/cases/{transaction_id}", 303)

    @app.post("/cases/{transaction_id}/status")
    async def set_status(
        request: Request, transaction_id: str, me: Annotated[Identity, Depends(needs("analyst"))]
    ) -> Response:
        form = await checked_form(request)
        status = str(form.get("status", ""))
        if status not in STATUSES:
            raise HTTPException(400, "status is open, in_review or closed")
        store.set_status(transaction_id, status, me.name)
        return RedirectResponse(f"/cases/{transaction_id}", 303)

    @app.exception_handler(HTTPException)
    async def problem(request: Request, exc: HTTPException) -> Response:
        return templates.TemplateResponse(
            request, "error.html", {"me": None, "status": exc.status_code, "detail": exc.detail},
            status_code=exc.status_code,
        )  # fmt: skip

    return app


def queue_filter(
    action: str = "",
    reason: str = "",
    min_amount: str = "",
    max_amount: str = "",
    since: str = "",
    until: str = "",
    user: str = "",
    merchant: str = "",
    assignee: str = "",
    sort: str = "newest",
    ak: str = "",
    at: str = "",
) -> QueueFilter:
    """The queue's query string, as the filter form submits it: an empty field is no filter,
    one that does not parse is refused with its name."""

    def number(name: str, text: str) -> float | None:
        try:
            value = float(text) if text.strip() else None
        except ValueError:
            raise HTTPException(400, f"{name} is not a number") from None
        if value is not None and not math.isfinite(value):
            raise HTTPException(400, f"{name} is not a finite number")
        return value

    def when(name: str, text: str) -> datetime | None:
        try:
            return datetime.fromisoformat(text) if text.strip() else None
        except ValueError:
            raise HTTPException(400, f"{name} is not a date and time") from None

    return QueueFilter(
        action=action if action in ("review", "block") else None,  # type: ignore[arg-type]
        reason=reason.strip() or None,
        min_amount=number("min_amount", min_amount),
        max_amount=number("max_amount", max_amount),
        since=when("since", since),
        until=when("until", until),
        user=user.strip() or None,
        merchant=merchant.strip() or None,
        assignee=assignee.strip() or None,
        sort="score" if sort == "score" else "newest",
        after=None
        if not (ak and at)
        else (number("ak", ak) if sort == "score" else when("ak", ak), at),  # type: ignore[arg-type]
    )


def _verdict(form: FormData) -> Verdict:
    verdict = str(form.get("verdict", ""))
    if verdict not in VERDICTS:
        raise HTTPException(400, "verdict is fraud, legitimate or friendly_fraud")
    return verdict  # type: ignore[return-value]


def _local(path: str) -> str:
    """Only a path on this site: never ``//evil.example``, ``/\\evil.example`` (browsers read a
    backslash as a slash) or a scheme, and no control character: no open redirect."""
    bad = "\\" in path or any(ord(ch) < 32 for ch in path)
    return path if path.startswith("/") and not path.startswith("//") and not bad else "/"


def _queue_url(query: str) -> str:
    return "/?" + query if query and "\n" not in query and "\r" not in query else "/"
