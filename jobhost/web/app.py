"""The WSGI app: routes, input checks and answers. What it answers comes from
jobhost.operations, as the command line's does; this module only parses and formats.

Reading is open (bind to loopback, or guard the port); POST needs the bearer token.
Errors are JSON on /api/, /healthz and /metrics, and a page elsewhere, always naming
what was wrong.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from jobhost import operations
from jobhost.clock import now as wall_now
from jobhost.config import HttpConfig
from jobhost.errors import StoreError, UnknownJobError
from jobhost.health import Health, as_json, health
from jobhost.observe.metrics import Metrics
from jobhost.observe.runlines import RunLines
from jobhost.outcomes import RunStatus
from jobhost.store import StateStore
from jobhost.web import pages
from jobhost.web.hosts import AllowedHosts

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec
    from jobhost.engine.host import Host

logger = logging.getLogger("jobhost.web")

MAX_BODY = 64 * 1024  # bytes a POST body may have: the API takes a slot at most
MAX_LIMIT = 10_000  # runs one request may ask for
STATIC = Path(__file__).parent / "static"
# The pages load nothing but their own stylesheet and script, and are never framed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

ROUTES = Map(
    [
        Rule("/", endpoint="index", methods=["GET"]),
        Rule("/jobs/<name>", endpoint="job_page", methods=["GET"]),
        Rule("/runs/<run_id>", endpoint="run_page", methods=["GET"]),
        Rule("/static/<any(style.css, refresh.js):asset>", endpoint="asset", methods=["GET"]),
        Rule("/healthz", endpoint="healthz", methods=["GET"]),
        Rule("/metrics", endpoint="prometheus", methods=["GET"]),
        Rule("/api/jobs", endpoint="api_jobs", methods=["GET"]),
        Rule("/api/jobs/<name>", endpoint="api_job", methods=["GET"]),
        Rule("/api/jobs/<name>/next", endpoint="api_next", methods=["GET"]),
        Rule("/api/jobs/<name>/run", endpoint="api_run", methods=["POST"]),
        Rule("/api/jobs/<name>/pause", endpoint="api_pause", methods=["POST"]),
        Rule("/api/jobs/<name>/resume", endpoint="api_resume", methods=["POST"]),
        Rule("/api/runs", endpoint="api_runs", methods=["GET"]),
        Rule("/api/runs/<run_id>", endpoint="api_one_run", methods=["GET"]),
    ],
    strict_slashes=False,
)


class ApiError(HTTPException):
    """An HTTP error whose JSON body names what was wrong (and the parameter or header, if one was)."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        param: str | None = None,
        header: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.named = {"param": param, "header": header}
        self.extra_headers = headers or {}


class WebApp:
    """The WSGI callable."""

    def __init__(
        self,
        jobs: Mapping[str, JobSpec],
        store: Callable[[], StateStore],
        host: Host,
        config: HttpConfig,
        metrics: Metrics,
        lines: RunLines,
        hosts: AllowedHosts,
        clock: Callable[[], dt.datetime] = wall_now,
    ):
        self.jobs = jobs
        self.store = store
        self.host = host
        self.config = config
        self.metrics = metrics
        self.lines = lines
        self.hosts = hosts
        self.clock = clock
        templates = Environment(
            loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(default=True)
        )
        pages.install_filters(templates)
        self.templates = templates

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = MAX_BODY
        return self.respond(request)(environ, start_response)

    def respond(self, request: Request) -> Response:
        adapter = ROUTES.bind_to_environ(request.environ)
        wants_json = request.path.startswith(("/api", "/healthz", "/metrics"))
        try:
            self._known_host(request)
            endpoint, args = adapter.match()
            return getattr(self, endpoint)(request, **args)
        except ApiError as exc:
            return self._error(exc.code, exc.message, wants_json, named=exc.named, headers=exc.extra_headers)
        except UnknownJobError as exc:
            return self._error(404, str(exc), wants_json)
        except StoreError as exc:
            return self._error(503, f"the state store cannot be read: {exc}", wants_json)
        except HTTPException as exc:  # no such path (404), method (405), a body too large (413) ...
            headers = dict(exc.get_headers())
            allow = {"Allow": headers["Allow"]} if "Allow" in headers else {}
            message = exc.description or exc.name
            if exc.code == 404:
                message = f"no such page or endpoint: {request.path}"
            elif exc.code == 405:
                message = f"{request.method} is not allowed on {request.path}; it takes {headers.get('Allow', 'none')}"
            elif exc.code == 413:
                message = f"the request body is larger than {MAX_BODY} bytes"
            return self._error(exc.code or 500, message, wants_json, headers=allow)
        except Exception as exc:  # a bug of ours: logged in full, answered in a line
            logger.exception(
                "the HTTP request %s %s failed", request.method, request.path, extra={"event": "http_failed"}
            )
            return self._error(500, f"the host failed to answer: {type(exc).__name__}: {exc}", wants_json)

    # -- pages ------------------------------------------------------------

    def index(self, request: Request) -> Response:
        now = self.clock()
        store = self.store()
        # Each job's recent runs (one short query on its index) give its last status too.
        recent = {name: store.runs(name, pages.BAR_RUNS) for name in sorted(self.jobs)}
        paused = store.paused_jobs()
        jobs = [
            operations.describe_job(spec, recent[name][0].status if recent[name] else None, name in paused, now)
            for name, spec in sorted(self.jobs.items())
        ]
        in_flight, queued, waiting = self.host.counts()
        verdict = self._health(now)
        return self._page(
            "index.html",
            request,
            now=now,
            jobs=jobs,
            recent=recent,
            health=verdict,
            load={"in_flight": in_flight, "queued": queued, "waiting": waiting},
        )

    def job_page(self, request: Request, name: str) -> Response:
        now = self.clock()
        store = self.store()
        status = self._status(request, "status")
        limit = self._whole(request, "limit", 100, MAX_LIMIT)
        self._only(request, {"status", "limit", "refresh"})
        records = operations.history(self.jobs, store, name, limit, status)
        spec = self.jobs.get(name)
        job, upcoming = None, []
        if spec is not None:  # else a job since removed, whose history is kept
            job = operations.describe_job(spec, store.last_statuses().get(name), name in store.paused_jobs(), now)
            upcoming = operations.next_slots(spec, now, 5)
        return self._page(
            "job.html",
            request,
            now=now,
            name=name,
            job=job,
            runs=records,
            upcoming=upcoming,
            status=status,
            statuses=[str(s) for s in RunStatus],
            base=self.hosts.base_url(),
        )

    def run_page(self, request: Request, run_id: str) -> Response:
        record = self.store().run(run_id)
        if record is None:
            raise ApiError(404, f"no run {run_id} in history (pruned after JOBS_HISTORY_DAYS, or never made)")
        return self._page("run.html", request, now=self.clock(), run=record, kept=self._lines_of(run_id))

    def asset(self, request: Request, asset: str) -> Response:
        kind = "text/css" if asset.endswith(".css") else "text/javascript"
        return Response((STATIC / asset).read_bytes(), mimetype=kind, headers={"Cache-Control": "max-age=300"})

    # -- health and metrics ---------------------------------------------------

    def healthz(self, request: Request) -> Response:
        verdict = self._health(self.clock())
        return self._json(as_json(verdict, self.host.status.last), 200 if verdict.healthy else 503)

    def prometheus(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- the JSON API ---------------------------------------------------------

    def api_jobs(self, request: Request) -> Response:
        self._only(request, set())
        return self._json(operations.catalog(self.jobs, self.store(), self.clock()))

    def api_job(self, request: Request, name: str) -> Response:
        self._only(request, set())
        spec = self._job(name)
        store = self.store()
        row = operations.describe_job(spec, store.last_statuses().get(name), name in store.paused_jobs(), self.clock())
        return self._json(row)

    def api_next(self, request: Request, name: str) -> Response:
        self._only(request, {"count"})
        count = self._whole(request, "count", 5, MAX_LIMIT)
        slots = operations.next_slots(self._job(name), self.clock(), count)
        return self._json([slot.isoformat() for slot in slots])

    def api_runs(self, request: Request) -> Response:
        self._only(request, {"job", "status", "limit"})
        job = request.args.get("job") or None
        limit = self._whole(request, "limit", 20, MAX_LIMIT)
        records = operations.history(self.jobs, self.store(), job, limit, self._status(request, "status"))
        return self._json([r.as_json() for r in records])

    def api_one_run(self, request: Request, run_id: str) -> Response:
        self._only(request, set())
        record = self.store().run(run_id)
        if record is None:
            raise ApiError(404, f"no run {run_id} in history (pruned after JOBS_HISTORY_DAYS, or never made)")
        kept = self._lines_of(run_id)
        body = record.as_json()
        body["log"] = None if kept is None else {"lines": kept[0], "dropped": kept[1]}
        return self._json(body)

    def api_run(self, request: Request, name: str) -> Response:
        body = self._authorized_body(request)
        spec = self._job(name)
        text = body.get("slot")
        if text is not None and not isinstance(text, str):
            raise ApiError(400, "slot: expected an ISO 8601 string such as 2026-11-23T06:00", param="slot")
        try:
            now = self.clock()
            slot = operations.slot_of(spec, text, now) if text else operations.default_slot(spec, now)
        except ValueError as exc:
            raise ApiError(400, f"slot: {exc}", param="slot") from None
        from jobhost.engine.requests import HostStopping

        try:
            context = self.host.request_run(spec, slot)
        except HostStopping as exc:
            raise ApiError(503, str(exc)) from None
        url = f"/api/runs/{context.run_id}"
        answer = {**context.fields(), "status": "requested", "url": url, "page": f"/runs/{context.run_id}"}
        return self._json(answer, 202, headers={"Location": url})

    def api_pause(self, request: Request, name: str) -> Response:
        return self._set_paused(request, name, True)

    def api_resume(self, request: Request, name: str) -> Response:
        return self._set_paused(request, name, False)

    def _set_paused(self, request: Request, name: str, paused: bool) -> Response:
        self._authorized_body(request)
        self._job(name)
        operations.set_paused(self.jobs, self.store(), name, paused)
        return self._json({"name": name, "paused": paused})

    # -- checks ---------------------------------------------------------------

    def _authorized_body(self, request: Request) -> dict[str, Any]:
        """The POST's JSON object (empty if no body), once the size and the bearer token are right."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise ApiError(413, f"the request body is larger than {MAX_BODY} bytes")
        if self.config.token is None:
            raise ApiError(403, "the API's POST endpoints are off: set JOBS_HTTP_TOKEN on the host to turn them on")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(
                401,
                "this endpoint needs the header 'Authorization: Bearer <JOBS_HTTP_TOKEN>'",
                headers={"WWW-Authenticate": 'Bearer realm="jobhost"'},
            )
        if not hmac.compare_digest(given.strip().encode(), self.config.token.encode()):
            raise ApiError(403, "the bearer token is not this host's JOBS_HTTP_TOKEN")
        self._only(request, set())
        raw = request.get_data(cache=False)
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # (nested too deep to read: no body we take)
            raise ApiError(400, 'body: expected a JSON object, such as {} or {"slot": "..."}', param="body") from None
        if not isinstance(body, dict):
            raise ApiError(400, 'body: expected a JSON object, such as {} or {"slot": "..."}', param="body")
        unknown = sorted(set(body) - {"slot"})
        if unknown:
            raise ApiError(400, f"body: unknown field {unknown[0]!r}; the only one is 'slot'", param=unknown[0])
        return body

    def _job(self, name: str) -> JobSpec:
        spec = self.jobs.get(name)
        if spec is None:
            raise UnknownJobError(name, list(self.jobs))
        return spec

    def _only(self, request: Request, allowed: set[str]) -> None:
        unknown = sorted(set(request.args) - allowed)
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            raise ApiError(
                400, f"unknown query parameter {unknown[0]!r} (this endpoint takes: {known})", param=unknown[0]
            )

    def _known_host(self, request: Request) -> None:
        """Refuse a request whose `Host` is not this server's (a page reading the API through DNS rebinding)."""
        given = request.environ.get("HTTP_HOST")
        if not self.hosts.allows(given):
            raise ApiError(
                400,
                f"Host: {_shown(given)} is not this server's address nor a name in JOBS_HTTP_HOSTS",
                header="Host",
            )

    def _whole(self, request: Request, param: str, default: int, most: int) -> int:
        """A whole-number query parameter from 1 to `most`; its digits are counted before int() reads them."""
        text = request.args.get(param)
        if text is None:
            return default
        digits = text.lstrip("0")
        if not (text.isascii() and text.isdecimal()) or len(digits) > len(str(most)) or not 1 <= int(text) <= most:
            raise ApiError(400, f"{param}: expected a whole number from 1 to {most}, got {_shown(text)}", param=param)
        return int(text)

    def _status(self, request: Request, param: str) -> RunStatus | None:
        text = request.args.get(param)
        if not text:
            return None
        try:
            return RunStatus(text)
        except ValueError:
            known = ", ".join(str(s) for s in RunStatus)
            raise ApiError(400, f"{param}: expected one of {known}, got {text!r}", param=param) from None

    def _lines_of(self, run_id: str) -> tuple[list[dict[str, Any]], int] | None:
        """A run's log lines: this host's memory (a run going on, or ended lately), else the store."""
        kept = self.lines.lines(run_id)
        return kept if kept is not None else self.store().kept_lines(run_id)

    def _health(self, now: dt.datetime) -> Health:
        """The verdict `jobs.py health` gives, read from the loop's live status (this process is its writer)."""
        hostname = self.host.config.hostname
        return health(
            self.host.status.last, lambda: self.store().heartbeat(hostname), hostname, None, now, alive=lambda _: True
        )

    # -- answers --------------------------------------------------------------

    def _json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(
            json.dumps(body, indent=2) + "\n", status=status, mimetype="application/json", headers=headers or {}
        )

    def _page(self, template: str, request: Request, **values: Any) -> Response:
        seconds = self._whole(request, "refresh", pages.REFRESH, pages.MAX_REFRESH)
        html = self.templates.get_template(template).render(**self._header(), refresh=seconds, **values)
        return Response(html, mimetype="text/html", headers=PAGE_HEADERS)

    def _header(self) -> dict[str, Any]:
        """What every page's header shows: the host, the release its loop runs, and since when."""
        status = self.host.status
        return {"hostname": self.host.config.hostname, "release": status.release, "started_at": status.started_at}

    def _error(
        self,
        code: int,
        message: str,
        as_json: bool,
        *,
        named: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        if as_json:
            body: dict[str, Any] = {"error": message, "status": code}
            body.update((key, name) for key, name in (named or {}).items() if name is not None)
            return self._json(body, code, headers)
        html = self.templates.get_template("error.html").render(**self._header(), code=code, message=message, refresh=0)
        return Response(html, status=code, mimetype="text/html", headers={**PAGE_HEADERS, **(headers or {})})


def _shown(text: str | None, most: int = 40) -> str:
    """A value a client sent, quoted for an error message, and cut short if it is long."""
    if text is None:
        return "(none)"
    return repr(text) if len(text) <= most else f"{text[:most]!r}... ({len(text)} characters)"
