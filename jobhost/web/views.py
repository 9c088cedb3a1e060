"""The HTML pages: the status page, a job's page, a run's page, their assets, and the error page.

What they show comes from jobhost.operations, as the command line's does; the templates
and pages.py say how it reads. A page takes ?refresh=N and refuses what it does not know,
with the API's checks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from werkzeug.wrappers import Request, Response

from jobhost import operations
from jobhost.health import Health
from jobhost.outcomes import RunStatus
from jobhost.store import StateStore
from jobhost.store.model import EVERY_JOB
from jobhost.web import charts, pages
from jobhost.web.api import MAX_LIMIT, ApiError, LinesOf, only, run_status, whole
from jobhost.web.hosts import AllowedHosts

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec
    from jobhost.engine.host import Host

STATIC = Path(__file__).parent / "static"
# The pages load nothing but their own stylesheet and script, and are never framed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class Views:
    """The pages, rendered from templates/."""

    def __init__(
        self,
        jobs: Mapping[str, JobSpec],
        store: Callable[[], StateStore],
        host: Host,
        hosts: AllowedHosts,
        clock: Callable[[], dt.datetime],
        health: Callable[[dt.datetime], Health],
        lines_of: LinesOf,
        *,
        actions: bool = False,
        sentry: str | None = None,
    ):
        self.sentry = sentry  # the Sentry issues address of a run, `{run_id}` to fill in; None: no link
        self.jobs = jobs
        self.actions = actions  # a token is set: the write endpoints answer
        self.store = store
        self.host = host
        self.hosts = hosts
        self.clock = clock
        self.health = health
        self.lines_of = lines_of
        templates = Environment(
            loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(default=True)
        )
        pages.install_filters(templates)
        self.templates = templates

    def index(self, request: Request) -> Response:
        now = self.clock()
        store = self.store()
        # Each job's recent runs (one short query on its index) give its last status too.
        recent = {name: store.runs(name, pages.BAR_RUNS) for name in sorted(self.jobs)}
        pauses = store.pauses()
        jobs = [
            operations.describe_job(spec, recent[name][0].status if recent[name] else None, pauses, now)
            for name, spec in sorted(self.jobs.items())
        ]
        in_flight, queued, waiting = self.host.counts()
        verdict = self.health(now)
        day = store.runs(None, charts.TIMELINE_RUNS)
        left_out = len(day) == charts.TIMELINE_RUNS and (day[-1].started or day[-1].slot) > now - charts.SPAN
        return self._page(
            "index.html",
            request,
            now=now,
            jobs=jobs,
            recent=recent,
            health=verdict,
            load={"in_flight": in_flight, "queued": queued, "waiting": waiting},
            timeline=charts.timeline(self.jobs, day, now, left_out),
            frozen=pauses.get(EVERY_JOB),
        )

    def audit_page(self, request: Request) -> Response:
        only(request, {"limit", "refresh"})
        limit = whole(request, "limit", 200, MAX_LIMIT)
        return self._page(
            "audit.html", request, now=self.clock(), trail=operations.audit_trail(self.store(), None, limit)
        )

    def job_page(self, request: Request, name: str) -> Response:
        now = self.clock()
        store = self.store()
        status = run_status(request, "status")
        limit = whole(request, "limit", 100, MAX_LIMIT)
        only(request, {"status", "limit", "refresh"})
        records = operations.history(self.jobs, store, name, limit, status)
        recent = store.runs(name, charts.DURATION_RUNS)
        spec = self.jobs.get(name)
        job, upcoming = None, []
        if spec is not None:  # else a job since removed, whose history is kept
            planned = operations.pending_one_offs(store).get(name, [])
            job = operations.describe_job(spec, store.last_statuses().get(name), store.pauses(), now, planned)
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
            actions=self.actions,
            tries=operations.tries(records),
            durations=charts.durations(recent),
            longest=max((r.duration_ms or 0 for r in recent if r.started is not None), default=0),
            chart_height=charts.CHART_HEIGHT,
        )

    def run_page(self, request: Request, run_id: str) -> Response:
        record = self.store().run(run_id)
        if record is None:
            raise ApiError(404, f"no run {run_id} in history (pruned after JOBS_HISTORY_DAYS, or never made)")
        link = None
        if self.sentry is not None and record.status.failure is not None:  # reported to Sentry
            link = self.sentry.format(run_id=quote(run_id, safe=""))
        return self._page(
            "run.html",
            request,
            now=self.clock(),
            run=record,
            kept=self.lines_of(run_id),
            sentry=link,
            cancellable=operations.cancellable(record),
        )

    def asset(self, request: Request, asset: str) -> Response:
        kind = "text/css" if asset.endswith(".css") else "text/javascript"
        return Response((STATIC / asset).read_bytes(), mimetype=kind, headers={"Cache-Control": "max-age=300"})

    def error_page(self, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
        html = self.templates.get_template("error.html").render(**self._header(), code=code, message=message, refresh=0)
        return Response(html, status=code, mimetype="text/html", headers={**PAGE_HEADERS, **(headers or {})})

    def _page(self, template: str, request: Request, **values: Any) -> Response:
        seconds = whole(request, "refresh", pages.REFRESH, pages.MAX_REFRESH)
        html = self.templates.get_template(template).render(**self._header(), refresh=seconds, **values)
        return Response(html, mimetype="text/html", headers=PAGE_HEADERS)

    def _header(self) -> dict[str, Any]:
        """What every page's header shows: the host, the release its loop runs and since when, how many
        jobs are failing (their last run ended badly), and whether actions are on (a token box)."""
        status = self.host.status
        last = self.store().last_statuses()
        failing = sorted(name for name, s in last.items() if name in self.jobs and s.tone == "bad")
        return {
            "hostname": self.host.config.hostname,
            "release": status.release,
            "started_at": status.started_at,
            "failing": failing,
            "acting": self.actions,
        }
