"""The WSGI app: routes, and every failure mapped to an answer that names what was wrong.

The pages are views.py, the JSON API (with its checks and bearer authentication) api.py;
/healthz and /metrics are answered here. Errors are JSON on /api/, /healthz and /metrics,
and a page elsewhere.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from jobhost.clock import now as wall_now
from jobhost.config import HttpConfig
from jobhost.errors import StoreError, UnknownJobError
from jobhost.health import Health, as_json, health
from jobhost.observe.metrics import Metrics
from jobhost.observe.runlines import RunLines
from jobhost.store import StateStore
from jobhost.web.api import MAX_BODY, Api, ApiError, json_answer, shown
from jobhost.web.hosts import AllowedHosts
from jobhost.web.views import Views

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec
    from jobhost.engine.host import Host

logger = logging.getLogger("jobhost.web")

ROUTES = Map(
    [
        Rule("/", endpoint="index", methods=["GET"]),
        Rule("/jobs/<name>", endpoint="job_page", methods=["GET"]),
        Rule("/runs/<run_id>", endpoint="run_page", methods=["GET"]),
        Rule("/audit", endpoint="audit_page", methods=["GET"]),
        Rule("/static/<any(style.css, refresh.js, actions.js):asset>", endpoint="asset", methods=["GET"]),
        Rule("/healthz", endpoint="healthz", methods=["GET"]),
        Rule("/metrics", endpoint="prometheus", methods=["GET"]),
        Rule("/api/jobs", endpoint="api_jobs", methods=["GET"]),
        Rule("/api/jobs/<name>", endpoint="api_job", methods=["GET"]),
        Rule("/api/jobs/<name>/next", endpoint="api_next", methods=["GET"]),
        Rule("/api/jobs/<name>/run", endpoint="api_run", methods=["POST"]),
        Rule("/api/jobs/<name>/pause", endpoint="api_pause", methods=["POST"]),
        Rule("/api/jobs/<name>/resume", endpoint="api_resume", methods=["POST"]),
        Rule("/api/freeze", endpoint="api_freeze", methods=["POST"]),
        Rule("/api/thaw", endpoint="api_thaw", methods=["POST"]),
        Rule("/api/runs", endpoint="api_runs", methods=["GET"]),
        Rule("/api/audit", endpoint="api_audit", methods=["GET"]),
        Rule("/api/runs/<run_id>", endpoint="api_one_run", methods=["GET"]),
        Rule("/api/runs/<run_id>/cancel", endpoint="api_cancel", methods=["POST"]),
    ],
    strict_slashes=False,
)


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
        zone: ZoneInfo,
        clock: Callable[[], dt.datetime] = wall_now,
    ):
        self.store = store
        self.host = host
        self.metrics = metrics
        self.lines = lines
        self.hosts = hosts
        self.clock = clock
        self.views = Views(
            jobs,
            store,
            host,
            hosts,
            clock,
            self._health,
            self._lines_of,
            actions=config.actions,
            sentry=config.sentry_issues,
        )
        api = Api(jobs, store, host, config, clock, self._lines_of, zone)
        self.endpoints: dict[str, Callable[..., Response]] = {
            "index": self.views.index,
            "job_page": self.views.job_page,
            "run_page": self.views.run_page,
            "audit_page": self.views.audit_page,
            "asset": self.views.asset,
            "healthz": self.healthz,
            "prometheus": self.prometheus,
            "api_jobs": api.list_jobs,
            "api_job": api.job,
            "api_next": api.next_slots,
            "api_run": api.request_run,
            "api_pause": api.pause,
            "api_resume": api.resume,
            "api_freeze": api.freeze,
            "api_thaw": api.thaw,
            "api_runs": api.runs,
            "api_audit": api.audit,
            "api_one_run": api.one_run,
            "api_cancel": api.cancel,
        }

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
            return self.endpoints[endpoint](request, **args)
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

    # -- health and metrics ---------------------------------------------------

    def healthz(self, request: Request) -> Response:
        verdict = self._health(self.clock())
        return json_answer(as_json(verdict, self.host.status.last), 200 if verdict.healthy else 503)

    def prometheus(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- what the pages and the API share --------------------------------------

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

    # -- errors ---------------------------------------------------------------

    def _known_host(self, request: Request) -> None:
        """Refuse a request whose `Host` is not this server's (a page reading the API through DNS rebinding)."""
        given = request.environ.get("HTTP_HOST")
        if not self.hosts.allows(given):
            raise ApiError(
                400,
                f"Host: {shown(given)} is not this server's address nor a name in JOBS_HTTP_HOSTS",
                header="Host",
            )

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
            return json_answer(body, code, headers)
        return self.views.error_page(code, message, headers)
