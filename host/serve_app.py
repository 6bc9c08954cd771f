"""The web application of `slm serve` (Starlette): a page per site (plan, live levels, state colours, the limit in
force, the last hour's chart, a report form), its JSON and server-sent-event feeds, and the report of a period
rendered by `slm report`'s own code (host/report.py).

Every route answers GET (and HEAD) only: nothing here changes a device or the database (the database connection is
read-only besides). Bad input is a 4xx with one line; an unexpected error is a 500 with one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import html
import tempfile
import threading
from pathlib import Path
from string import Template

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from slm.errors import InputError, OperationError, one_line
from slm.serve_data import FleetReader, ServeDbUnavailable, parse_utc
from slm.serve_live import LiveViews, event_stream
from slm.serve_plan import ID_RE, Plan

WEB = Path(__file__).parent / "web"
REPORT_MAX_DAYS = 31  # a longer period is refused (a report of a year would hold the server for minutes)
REPORT_WAIT_S = 300.0  # reports are made one at a time (matplotlib); a request waits this long for its turn
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                 b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response (scripts only from this server, no framing)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


@functools.lru_cache(maxsize=None)
def _template(name: str) -> Template:
    return Template((WEB / name).read_text(encoding="utf-8"))


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_template("page.html").substitute(title=html.escape(title), body=body), status_code=status)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def build_app(reader: FleetReader, plans: dict[str, Plan], db_url: str, stopping: asyncio.Event | None = None) \
        -> Starlette:
    """The application over an open FleetReader; `plans` from slm.serve_plan.load_positions."""
    views = LiveViews(reader)
    stopping = stopping or asyncio.Event()
    report_lock = threading.Lock()

    def known_site(request: Request) -> str:
        site = request.path_params["site"]
        if not ID_RE.match(site) or not any(s == site for s, _ in reader.sites()):
            raise HTTPException(404, f"no site {site[:64]!r} in the database")
        return site

    async def index(request: Request) -> Response:
        sites = await run_in_threadpool(reader.sites)
        items = "".join(f'<li><a href="/sites/{html.escape(s)}">{html.escape(s)}</a> ({n} meters)</li>'
                        for s, n in sites) or "<li>no site in the database yet</li>"
        return _page("slm: sites", f"<h1>Sites</h1><ul class=\"sites\">{items}</ul>")

    async def site_page(request: Request) -> Response:
        site = await run_in_threadpool(known_site, request)
        body = _template("site.html").substitute(site=html.escape(site))
        return _page(f"slm: {site}", body)

    async def api_sites(request: Request) -> Response:
        sites = await run_in_threadpool(reader.sites)
        return JSONResponse([{"site": s, "meters": n} for s, n in sites])

    async def api_site(request: Request) -> Response:
        site = await run_in_threadpool(known_site, request)
        view = await run_in_threadpool(views.get, site)
        plan = plans.get(site)
        return JSONResponse({**view, "plan": plan.as_json() if plan else None})

    async def api_history(request: Request) -> Response:
        site = await run_in_threadpool(known_site, request)
        view = await run_in_threadpool(views.get, site)
        end = view["newest_minute_end"]
        minutes = {}
        if end is not None:
            devices = [m["device"] for m in view["meters"]]
            minutes = await run_in_threadpool(reader.history, site, devices, parse_utc(end))
        return JSONResponse({"site": site, "end": end, "minutes": minutes})

    async def api_live(request: Request) -> Response:
        site = await run_in_threadpool(known_site, request)
        return StreamingResponse(event_stream(views, site, stopping), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    def make_report_html(site: str, start: str, end: str) -> str:
        from slm.report import make_report, parse_local_time

        t0, t1 = parse_local_time(start, "from"), parse_local_time(end, "to", end=True)
        if t1 <= t0:
            raise InputError(f"to {end} is not after from {start}")
        if t1 - t0 > dt.timedelta(days=REPORT_MAX_DAYS):
            raise InputError(f"a report covers at most {REPORT_MAX_DAYS} days")
        if not report_lock.acquire(timeout=REPORT_WAIT_S):
            raise ServeDbUnavailable("another report is being made; try again")
        try:
            with tempfile.TemporaryDirectory(prefix="slm-serve-report-") as tmp:
                out = Path(tmp) / "report.html"
                make_report(db_url, start, end, site, str(out))
                return out.read_text(encoding="utf-8")
        finally:
            report_lock.release()

    async def report(request: Request) -> Response:
        site = await run_in_threadpool(known_site, request)
        start, end = request.query_params.get("from"), request.query_params.get("to")
        if not start or not end:
            raise HTTPException(400, "give the period: ?from=2026-07-15T19:00&to=2026-07-15T23:00 (the meters' "
                                     "local time)")
        return HTMLResponse(await run_in_threadpool(make_report_html, site, start, end))

    def error(request: Request, status: int, message: str) -> Response:
        message = one_line(message)
        if _is_api(request):
            return JSONResponse({"error": message}, status_code=status)
        if request.url.path.endswith("/report") and status < 500:
            return PlainTextResponse(message, status_code=status)
        return _page(f"slm: error {status}", f'<h1>Error {status}</h1><p class="error">{html.escape(message)}</p>'
                     '<p><a href="/">All sites</a></p>', status)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    async def input_error(request: Request, exc: InputError) -> Response:
        return error(request, 400, str(exc))

    async def unavailable(request: Request, exc: OperationError) -> Response:
        return error(request, 503, str(exc))  # the database (or a report's turn) is not to be had now

    async def internal(request: Request, exc: Exception) -> Response:
        return error(request, 500, f"internal error: {type(exc).__name__}")

    site_path = "{site}"
    routes = [
        Route("/", index),
        Route(f"/sites/{site_path}", site_page),
        Route(f"/sites/{site_path}/report", report),
        Route("/api/sites", api_sites),
        Route(f"/api/sites/{site_path}", api_site),
        Route(f"/api/sites/{site_path}/history", api_history),
        Route(f"/api/sites/{site_path}/live", api_live),
        Mount("/static", app=StaticFiles(directory=WEB / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, InputError: input_error,
                                                       OperationError: unavailable, Exception: internal})
    app.add_middleware(SecurityHeaders)
    app.state.stopping = stopping
    return app


READ_ONLY_METHODS = {"GET", "HEAD"}
"""What every route of the application accepts (tests/test_serve.py checks it on the route table)."""
