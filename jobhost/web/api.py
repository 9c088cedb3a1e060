"""The JSON API under /api/: its endpoints, the checks of what a client sends, and bearer authentication.

What it answers comes from jobhost.operations, as the command line's does; this module only
checks and formats. Reading is open (bind to loopback, or guard the port); POST needs the
bearer token. The query checks here serve the pages too, so both refuse alike.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from jobhost import operations
from jobhost.config import HttpConfig
from jobhost.context import Params
from jobhost.errors import HostStopping, UnknownJobError
from jobhost.outcomes import RunStatus
from jobhost.store import StateStore
from jobhost.store.model import EVERY_JOB, Action, OneOff

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec
    from jobhost.engine.host import Host

logger = logging.getLogger("jobhost.web")

MAX_BODY = 64 * 1024  # bytes a POST body may have: the API takes a slot at most
MAX_LIMIT = 10_000  # runs one request may ask for
LinesOf = Callable[[str], tuple[list[dict[str, Any]], int] | None]  # a run's kept log lines, if any


class ApiError(HTTPException):
    """An HTTP error whose JSON body names what was wrong (and the parameter or header, if one was)."""

    code: int  # always given, unlike werkzeug's own exceptions

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


class Api:
    """The /api/ endpoints: jobs, their next slots, runs, and (with the token) run, pause, resume,
    freeze and thaw."""

    def __init__(
        self,
        jobs: Mapping[str, JobSpec],
        store: Callable[[], StateStore],
        host: Host,
        config: HttpConfig,
        clock: Callable[[], dt.datetime],
        lines_of: LinesOf,
        zone: ZoneInfo,
    ):
        self.zone = zone  # of a freeze's end without an offset, as on the command line (JOBS_TIMEZONE)
        self.jobs = jobs
        self.store = store
        self.host = host
        self.config = config
        self.clock = clock
        self.lines_of = lines_of

    def audit(self, request: Request) -> Response:
        only(request, {"since", "limit"})
        limit = whole(request, "limit", 100, MAX_LIMIT)
        text = request.args.get("since")
        since = None
        if text:
            try:
                since = operations.instant(text, ZoneInfo("UTC"), self.clock())
            except ValueError as exc:
                raise ApiError(400, f"since: {exc}", param="since") from None
        return json_answer([action.as_json() for action in operations.audit_trail(self.store(), since, limit)])

    def list_jobs(self, request: Request) -> Response:
        only(request, set())
        return json_answer(operations.catalog(self.jobs, self.store(), self.clock()))

    def job(self, request: Request, name: str) -> Response:
        only(request, set())
        spec = known_job(self.jobs, name)
        store = self.store()
        planned = operations.pending_one_offs(store).get(name, [])
        row = operations.describe_job(spec, store.last_statuses().get(name), store.pauses(), self.clock(), planned)
        return json_answer(row)

    def next_slots(self, request: Request, name: str) -> Response:
        only(request, {"count"})
        count = whole(request, "count", 5, MAX_LIMIT)
        slots = operations.next_slots(known_job(self.jobs, name), self.clock(), count)
        return json_answer([slot.isoformat() for slot in slots])

    def runs(self, request: Request) -> Response:
        only(request, {"job", "status", "limit"})
        job = request.args.get("job") or None
        limit = whole(request, "limit", 20, MAX_LIMIT)
        records = operations.history(self.jobs, self.store(), job, limit, run_status(request, "status"))
        return json_answer([r.as_json() for r in records])

    def one_run(self, request: Request, run_id: str) -> Response:
        only(request, set())
        record = self.store().run(run_id)
        if record is None and (planned := self.store().one_off(run_id)) is not None:  # a one-off not started yet
            return json_answer(
                {**planned.as_json(), "status": "scheduled" if planned.state == "pending" else planned.state}
            )
        if record is None:
            raise ApiError(404, f"no run {run_id} in history (pruned after JOBS_HISTORY_DAYS, or never made)")
        kept = self.lines_of(run_id)
        body = record.as_json()
        body["log"] = None if kept is None else {"lines": kept[0], "dropped": kept[1]}
        return json_answer(body)

    def request_run(self, request: Request, name: str) -> Response:
        actor, body = authorized_body(request, self.config, {"slot", "params", "at"})
        spec = known_job(self.jobs, name)
        given = body.get("params")
        if given is not None and not isinstance(given, dict):
            raise ApiError(400, "params: expected an object of the job's keyword arguments", param="params")
        try:
            params = operations.run_params(spec, given) if given else None
        except ValueError as exc:
            field = str(exc).partition(":")[0]
            raise ApiError(400, str(exc), param=field if field == "params" else f"params.{field}") from None
        at = text_field(body, "at")
        if at is not None:
            return self._one_off(spec, actor, at, params, body)
        text = body.get("slot")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ApiError(400, "slot: expected an ISO 8601 string such as 2026-11-23T06:00", param="slot")
        try:
            now = self.clock()
            slot = operations.slot_of(spec, text, now) if text else operations.default_slot(spec, now)
        except ValueError as exc:
            raise ApiError(400, f"slot: {exc}", param="slot") from None
        try:
            context = self.host.request_run(spec, slot, actor, params)
        except HostStopping as exc:
            raise ApiError(503, str(exc)) from None
        detail: dict[str, object] = {"slot": slot.isoformat(), "run_id": context.run_id}
        if params is not None:
            detail["params"] = params
        operations.record_action(self.store(), Action(now, actor, "run", name, "", detail))
        url = f"/api/runs/{context.run_id}"
        answer = {**context.fields(), "status": "requested", "url": url, "page": f"/runs/{context.run_id}"}
        return json_answer(answer, 202, headers={"Location": url})

    def _one_off(self, spec: JobSpec, actor: str, at: str, params: Params | None, body: dict[str, Any]) -> Response:
        """A run at a later instant: 201 with it; 400 naming `at` for one not to come, or a slot."""
        if body.get("slot") is not None:
            raise ApiError(
                400, "slot: give at (a run at a later instant) or slot (a slot run now), not both", param="slot"
            )
        try:
            planned = operations.one_off(spec, self.store(), at, actor, self.clock(), params)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="at") from None
        self.host.nudge()
        url = f"/api/runs/{planned.run_id}"
        return json_answer({**planned.as_json(), "url": url}, 201, headers={"Location": url})

    def cancel(self, request: Request, run_id: str) -> Response:
        """Ask for the run to be stopped (by whichever host has it): 202 with the request, 404 for
        an unknown run, 409 for one that has ended; nothing changes but the request."""
        actor, body = authorized_body(request, self.config, {"reason"})
        reason = text_field(body, "reason") or ""
        try:
            record, asked = operations.cancel(self.jobs, self.store(), run_id, actor, self.clock(), reason)
        except operations.CannotCancel as exc:
            raise ApiError(exc.code, str(exc)) from None
        except ValueError as exc:  # the reason
            raise ApiError(400, str(exc), param="reason") from None
        if isinstance(record, OneOff):  # not started: it never starts
            return json_answer({**record.as_json(), "state": "cancelled", "asked_by": asked.asked_by})
        if record.host == self.host.config.hostname:
            self.host.nudge()  # this host's loop: at once; another host's: at its next tick
        url = f"/api/runs/{record.run_id}"
        answer = {
            "run_id": record.run_id,
            "job": record.job,
            "host": record.host,
            "status": "cancelling",
            "asked_by": asked.asked_by,
            "asked_at": asked.asked_at.isoformat(),
            "url": url,
        }
        return json_answer(answer, 202, headers={"Location": url})

    def pause(self, request: Request, name: str) -> Response:
        return self._set_paused(request, name, True)

    def resume(self, request: Request, name: str) -> Response:
        return self._set_paused(request, name, False)

    def freeze(self, request: Request) -> Response:
        return self._set_paused(request, None, True)

    def thaw(self, request: Request) -> Response:
        return self._set_paused(request, None, False)

    def _set_paused(self, request: Request, job: str | None, paused: bool) -> Response:
        """Pause or resume a job, or freeze or thaw every job (`job` None); a resume of what is not
        paused changes nothing and says so (`changed`: false)."""
        actor, body = authorized_body(request, self.config, {"reason", "until", "for"} if paused else {"reason"})
        name = EVERY_JOB if job is None else known_job(self.jobs, job).name  # "*" in the address is no job
        zone = known_job(self.jobs, name).schedule.zone if name != EVERY_JOB else self.zone
        reason = text_field(body, "reason") or ""
        now = self.clock()
        try:
            end = operations.pause_end(text_field(body, "until"), text_field(body, "for"), zone, now)
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            raise ApiError(400, f"{field}: {message}", param=field) from None
        changed = True
        try:
            operations.set_paused(self.jobs, self.store(), name, paused, actor, now, reason, end)
        except operations.NotPaused:
            changed = False
        except ValueError as exc:  # the reason
            raise ApiError(400, str(exc), param="reason") from None
        pause = self.store().pauses().get(name)
        freeze = operations.freeze(self.store())
        answer = {
            "paused": paused,
            "pause": pause.as_json() if pause else None,
            "changed": changed,
            "frozen": freeze is not None,  # a job resumed (or not paused) runs no slot while every job is
        }
        return json_answer({"name": name, **answer} if name != EVERY_JOB else {"every_job": True, **answer})


# -- checks ---------------------------------------------------------------


def text_field(body: dict[str, Any], name: str) -> str | None:
    """A string field of a POST's body, if given; a JSON error naming it if it is not a string."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{name}: expected a string", param=name)
    return value


def actor_of(given: str, config: HttpConfig) -> str | None:
    """The name of the token `given` is, or None. Every token is compared, each in constant time, so
    the answer's timing tells nothing of which one came close."""
    found = None
    for name, token in config.holders():
        if hmac.compare_digest(given.encode(), token.encode()):
            found = found or name
    return found


def authorized_body(
    request: Request, config: HttpConfig, fields: frozenset[str] | set[str] = frozenset({"slot"})
) -> tuple[str, dict[str, Any]]:
    """Who is acting (the token's name) and the POST's JSON object (empty if no body), once the size
    and the bearer token are right. A wrong token is logged, never its value."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, f"the request body is larger than {MAX_BODY} bytes")
    if not config.actions:
        raise ApiError(
            403, "the API's POST endpoints are off: set JOBS_HTTP_TOKEN or JOBS_HTTP_TOKENS on the host to turn them on"
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401,
            "this endpoint needs the header 'Authorization: Bearer <JOBS_HTTP_TOKEN>'",
            headers={"WWW-Authenticate": 'Bearer realm="jobhost"'},
        )
    actor = actor_of(given.strip(), config)
    if actor is None:
        logger.warning(
            "refused %s %s: the bearer token is none of this host's",
            request.method,
            request.path,
            extra={"event": "http_token_refused", "path": request.path, "remote_addr": request.remote_addr},
        )
        raise ApiError(403, "the bearer token is not one of this host's (JOBS_HTTP_TOKEN, JOBS_HTTP_TOKENS)")
    only(request, set())
    raw = request.get_data(cache=False)
    if not raw.strip():
        return actor, {}
    try:
        body = json.loads(raw, object_pairs_hook=_no_key_twice, parse_constant=_no_constant)
    except _RefusedJson as exc:
        raise ApiError(400, str(exc), param=exc.field) from None
    except (ValueError, UnicodeDecodeError, RecursionError):  # (nested too deep to read: no body we take)
        raise ApiError(400, 'body: expected a JSON object, such as {} or {"slot": "..."}', param="body") from None
    if (field := _not_text(body)) is not None:  # a lone surrogate: no store, log or job could keep it
        raise ApiError(400, f"{field}: not valid text (a lone UTF-16 surrogate)", param=field)
    if not isinstance(body, dict):
        raise ApiError(400, 'body: expected a JSON object, such as {} or {"slot": "..."}', param="body")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        known = ", ".join(repr(name) for name in sorted(fields)) or "none"
        raise ApiError(400, f"body: unknown field {unknown[0]!r}; this endpoint takes {known}", param=unknown[0])
    return actor, body


class _RefusedJson(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _no_key_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (which one would count is the reader's guess)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _RefusedJson(key, "given twice")
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON: refused, as no strict reader of the run's record could read them."""
    raise _RefusedJson("body", f"{name} is not a JSON number")


def _not_text(value: Any, where: str = "") -> str | None:
    """The field (dotted) of the first string in `value` that is no valid text, if any."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "body"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _not_text(key, where or "body") or _not_text(item, f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
    if isinstance(value, list):
        for item in value:
            if (found := _not_text(item, where)) is not None:
                return found
    return None


def known_job(jobs: Mapping[str, JobSpec], name: str) -> JobSpec:
    spec = jobs.get(name)
    if spec is None:
        raise UnknownJobError(name, list(jobs))
    return spec


def only(request: Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ApiError(400, f"unknown query parameter {unknown[0]!r} (this endpoint takes: {known})", param=unknown[0])


def whole(request: Request, param: str, default: int, most: int) -> int:
    """A whole-number query parameter from 1 to `most`; its digits are counted before int() reads them."""
    text = request.args.get(param)
    if text is None:
        return default
    digits = text.lstrip("0")
    if not (text.isascii() and text.isdecimal()) or len(digits) > len(str(most)) or not 1 <= int(text) <= most:
        raise ApiError(400, f"{param}: expected a whole number from 1 to {most}, got {shown(text)}", param=param)
    return int(text)


def run_status(request: Request, param: str) -> RunStatus | None:
    text = request.args.get(param)
    if not text:
        return None
    try:
        return RunStatus(text)
    except ValueError:
        known = ", ".join(str(s) for s in RunStatus)
        raise ApiError(400, f"{param}: expected one of {known}, got {text!r}", param=param) from None


def shown(text: str | None, most: int = 40) -> str:
    """A value a client sent, quoted for an error message, and cut short if it is long."""
    if text is None:
        return "(none)"
    return repr(text) if len(text) <= most else f"{text[:most]!r}... ({len(text)} characters)"


def json_answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, indent=2) + "\n", status=status, mimetype="application/json", headers=headers or {}
    )
