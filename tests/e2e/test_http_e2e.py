"""End to end: a real host serving its HTTP face, asked over real sockets, as a monitor, a
Prometheus server and an operator with curl would."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Deployment, HostProcess, events
from tests.support.http_client import base_url, call, serving
from tests.support.sentry_servers import wait_until

TOKEN = "s3cret-token-for-tests-0123456789"

JOBS = """
import logging, time
from jobhost import job, every

log = logging.getLogger(__name__)

@job(every().day.at("03:00"))
def exports():
    print("exported 3 rows")
    log.warning("partner slow: %s s", 4)

@job(every().day.at("04:00"), retries=2, retry_delay="1h")
def broken():
    raise ValueError("bad row 7")

@job(every().day.at("05:00"), timeout="1s")
def hangs():
    time.sleep(30)

@job(every().day.at("06:00"))
def sleeper():
    time.sleep(60)

@job(every().day.at("07:00"))
def sized(rows: int = 10, region: str = "eu"):
    print(f"{rows} rows for {region}")
"""


def _start(deployment: Deployment, host, **env: str) -> tuple[HostProcess, str]:
    return serving(deployment, host, JOBS, **env)


def _run(url: str, job: str, **body: str) -> str:
    answer = call(f"{url}/api/jobs/{job}/run", "POST", token=TOKEN, body=json.dumps(body).encode() if body else None)
    assert answer.status == 202, answer.body
    run_id = answer.json()["run_id"]
    assert answer.headers["location"] == f"/api/runs/{run_id}"
    return run_id


def _run_and_end(deployment: Deployment, job: str) -> str:
    """Run `job` by hand with the CLI (it needs no token), to its end; its run id."""
    assert deployment.cli("run", job).returncode in (0, 1)
    return deployment.history(job)[0]["run_id"]


def _ended(url: str, run_id: str) -> dict:
    def ended() -> dict | None:
        answer = call(f"{url}/api/runs/{run_id}")
        return answer.json() if answer.status == 200 and answer.json()["ended"] else None

    return wait_until(ended, 30, f"run {run_id} to end")


def test_jobs_and_runs_answer_as_the_command_line_does(deployment: Deployment, host) -> None:
    process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN)
    listed = json.loads(deployment.cli("list", "--json").stdout)
    assert call(f"{url}/api/jobs").json() == listed
    assert call(f"{url}/api/jobs/exports").json() == next(j for j in listed if j["name"] == "exports")

    assert (
        call(f"{url}/api/jobs/exports/next?count=3").json()
        == deployment.cli("next", "exports", "--count", "3").stdout.split()
    )

    ok, failed = _run(url, "exports"), _run(url, "broken")
    assert _ended(url, ok)["status"] == "succeeded"
    assert _ended(url, failed)["status"] == "failed"

    assert call(f"{url}/api/runs?limit=50").json() == deployment.history()
    assert call(f"{url}/api/runs?job=broken").json() == deployment.history("broken")
    only_failed = call(f"{url}/api/runs?status=failed").json()
    assert [r["run_id"] for r in only_failed] == [failed]
    assert call(f"{url}/api/runs?job=exports&status=failed").json() == []

    # A run asked for by hand is one run, as `run` makes it: not retried though the job has retries.
    assert [r["run_id"] for r in deployment.history("broken")] == [failed]
    assert not events(process.records(), "broken", "run_retrying")

    # The run's own log lines come with it: what it printed and logged, and the lifecycle lines.
    run = call(f"{url}/api/runs/{ok}").json()
    messages = [line["message"] for line in run["log"]["lines"]]
    assert "exported 3 rows" in messages and "partner slow: 4 s" in messages
    assert any(line["event"] == "run_succeeded" for line in run["log"]["lines"])
    failure = call(f"{url}/api/runs/{failed}").json()["log"]["lines"]
    assert any("ValueError: bad row 7" in (line["traceback"] or "") for line in failure)


def test_a_run_for_a_named_slot_and_pause_resume(deployment: Deployment, host) -> None:
    _process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN)
    run_id = _run(url, "exports", slot="2026-01-05T03:00")
    record = _ended(url, run_id)
    assert record["slot"].startswith("2026-01-05T03:00") and record["requested_by"] == "http token"
    assert "by hand: http token" in deployment.cli("history", "exports").stdout

    answer = call(f"{url}/api/jobs/exports/pause", "POST", token=TOKEN)
    assert (answer.status, answer.json()["paused"], answer.json()["pause"]["by"]) == (200, True, "http token")
    listed = {j["name"]: j for j in json.loads(deployment.cli("list", "--json").stdout)}
    assert listed["exports"]["paused"] is True
    assert call(f"{url}/api/jobs/exports").json()["paused"] is True
    assert call(f"{url}/api/jobs/exports/resume", "POST", token=TOKEN).json()["paused"] is False
    assert call(f"{url}/api/jobs/exports").json()["paused"] is False

    body = json.dumps({"reason": "partner migrating", "for": "90m"}).encode()
    paused = call(f"{url}/api/jobs/exports/pause", "POST", token=TOKEN, body=body).json()["pause"]
    assert paused["reason"] == "partner migrating"
    since, until = dt.datetime.fromisoformat(paused["since"]), dt.datetime.fromisoformat(paused["until"])
    assert until - since == dt.timedelta(minutes=90)
    assert call(f"{url}/api/jobs/exports").json()["pause"] == paused
    trail = call(f"{url}/api/audit").json()
    assert [(a["action"], a["actor"], a["reason"]) for a in trail] == [
        ("pause", "http token", "partner migrating"),
        ("resume", "http token", ""),
        ("pause", "http token", ""),
        ("run", "http token", ""),
    ]
    assert trail[-1]["detail"] == {"slot": record["slot"], "run_id": run_id}
    for bad, field in [({"until": "2020-01-01T00:00"}, "until"), ({"for": 5}, "for"), ({"when": "now"}, "when")]:
        refused = call(f"{url}/api/jobs/exports/pause", "POST", token=TOKEN, body=json.dumps(bad).encode())
        assert (refused.status, refused.json()["param"]) == (400, field)
    assert len(call(f"{url}/api/audit").json()) == 4  # nothing refused was recorded
    assert call(f"{url}/api/audit?since=yesterday").status == 400


def test_a_freeze_over_http_pauses_every_job_and_a_thaw_ends_it(deployment: Deployment, host) -> None:
    _process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN, JOBS_TIMEZONE="Europe/London")
    assert call(f"{url}/api/freeze", "POST").status == 401  # no token, no freeze
    body = json.dumps({"reason": "incident 42", "until": "2040-06-01T12:00"}).encode()
    frozen = call(f"{url}/api/freeze", "POST", token=TOKEN, body=body)
    assert frozen.status == 200 and frozen.json()["pause"]["until"] == "2040-06-01T11:00:00+00:00"  # London's BST
    jobs = call(f"{url}/api/jobs").json()
    assert all(j["paused"] and j["freeze"]["reason"] == "incident 42" and j["pause"] is None for j in jobs)
    page = call(f"{url}/").body.decode()
    assert 'id="freeze"' in page and "incident 42" in page
    thawed = call(f"{url}/api/thaw", "POST", token=TOKEN).json()
    assert (thawed["paused"], thawed["changed"]) == (False, True)
    assert call(f"{url}/api/thaw", "POST", token=TOKEN).json()["changed"] is False  # nothing was frozen
    assert not any(j["paused"] for j in call(f"{url}/api/jobs").json())
    assert [a["action"] for a in call(f"{url}/api/audit").json()] == ["thaw", "freeze"]


def test_a_run_cancelled_over_http_ends_cancelled_and_a_second_cancel_changes_nothing(
    deployment: Deployment, host
) -> None:
    process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN)
    run_id = _run(url, "sleeper")
    process.wait_for(lambda rs: any(r.get("run_id") == run_id and r.get("event") == "run_started" for r in rs))
    assert call(f"{url}/api/runs/{run_id}/cancel", "POST").status == 401
    body = json.dumps({"reason": "wrong day"}).encode()
    asked = call(f"{url}/api/runs/{run_id}/cancel", "POST", token=TOKEN, body=body)
    assert asked.status == 202 and asked.json()["status"] == "cancelling" and asked.json()["asked_by"] == "http token"
    record = _ended(url, run_id)
    assert (record["status"], record["reason"]) == ("cancelled", "cancelled by http token: wrong day")
    again = call(f"{url}/api/runs/{run_id}/cancel", "POST", token=TOKEN)
    assert again.status == 409 and "as cancelled; nothing changed" in again.json()["error"]
    assert call(f"{url}/api/runs/nope/cancel", "POST", token=TOKEN).status == 404
    refused = call(f"{url}/api/runs/{run_id}/cancel", "POST", token=TOKEN, body=json.dumps({"why": 1}).encode())
    assert (refused.status, refused.json()["param"]) == (400, "why")
    assert [(a["action"], a["target"]) for a in call(f"{url}/api/audit").json()][:1] == [("cancel", run_id)]


def test_a_run_with_params_over_http_is_checked_kept_and_shown_on_its_page(deployment: Deployment, host) -> None:
    _process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN)
    assert call(f"{url}/api/jobs/sized").json()["parameters"] == [
        {"name": "rows", "type": "int", "default": 10},
        {"name": "region", "type": "str", "default": "eu"},
    ]
    for bad, field in [({"rows": "many"}, "params.rows"), ({"colour": "red"}, "params.colour"), ([1], "params")]:
        body = json.dumps({"params": bad}).encode()
        refused = call(f"{url}/api/jobs/sized/run", "POST", token=TOKEN, body=body)
        assert (refused.status, refused.json()["param"]) == (400, field), refused.json()
    asked = call(f"{url}/api/jobs/sized/run", "POST", token=TOKEN, body=json.dumps({"params": {"rows": "25"}}).encode())
    assert asked.status == 202
    record = _ended(url, asked.json()["run_id"])
    assert (record["status"], record["params"], record["requested_by"]) == ("succeeded", {"rows": 25}, "http token")
    page = call(f"{url}/runs/{record['run_id']}").body.decode()
    assert "<code>rows=25</code>" in page and "by hand, by http token" in page
    [action] = call(f"{url}/api/audit").json()  # the refused ones are not in the trail
    assert action["detail"]["params"] == {"rows": 25}


def test_a_run_at_a_later_time_over_http_is_kept_shown_and_cancelled(deployment: Deployment, host) -> None:
    _process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN)
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    body = json.dumps({"at": at, "params": {"rows": 3}}).encode()
    asked = call(f"{url}/api/jobs/sized/run", "POST", token=TOKEN, body=body)
    assert asked.status == 201 and asked.json()["params"] == {"rows": 3}
    run_id = asked.json()["run_id"]
    assert call(f"{url}{asked.headers['location']}").json()["status"] == "scheduled"
    assert [o["run_id"] for o in call(f"{url}/api/jobs/sized").json()["one_offs"]] == [run_id]
    assert 'id="one-offs"' in call(f"{url}/jobs/sized").body.decode()
    past = call(f"{url}/api/jobs/sized/run", "POST", token=TOKEN, body=json.dumps({"at": "2020-01-01T00:00"}).encode())
    assert (past.status, past.json()["param"]) == (400, "at")
    cancelled = call(f"{url}/api/runs/{run_id}/cancel", "POST", token=TOKEN)
    assert cancelled.status == 200 and cancelled.json()["state"] == "cancelled"
    assert call(f"{url}/api/runs/{run_id}").json()["status"] == "cancelled"
    assert call(f"{url}/api/jobs/sized").json()["one_offs"] == []


@pytest.mark.parametrize(
    ("path", "raw", "code", "field"),
    [
        ("/api/jobs/sized/run", b'{"params": {"region": "\\ud800"}}', 400, "params.region"),  # no text
        ("/api/jobs/sized/run", b'{"params": {"rows": 1}, "params": {"rows": 2}}', 400, "params"),
        ("/api/jobs/sized/run", b'{"params": {"rows": NaN}}', 400, "body"),
        ("/api/jobs/sized/run", b'{"slot": ""}', 400, "slot"),
        ("/api/jobs/exports/pause", b'{"reason": "x\\nexports  succeeded"}', 400, "reason"),
        ("/api/jobs/%2A/pause", b"", 404, None),  # "*" in the address is no job: no freeze by the back door
        ("/api/jobs/%2A/resume", b"", 404, None),
    ],
)
def test_a_request_no_record_could_keep_is_refused_naming_the_field_and_nothing_happens(
    deployment: Deployment, host, path: str, raw: bytes, code: int, field: str | None
) -> None:
    process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN)
    refused = call(f"{url}{path}", "POST", token=TOKEN, body=raw)
    assert refused.status == code, refused.body
    assert refused.json().get("param") == field
    assert call(f"{url}/api/audit").json() == [] and call(f"{url}/api/runs").json() == []
    assert not any(j["paused"] for j in call(f"{url}/api/jobs").json())
    assert not [r for r in process.records() if r.get("event") == "run_requested"]


def test_each_named_token_acts_under_its_name_and_a_wrong_one_is_logged_without_its_value(
    deployment: Deployment, host
) -> None:
    alice, bot = "alice-token-0123456789abcdef", "bot-token-0123456789abcdef"
    process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN, JOBS_HTTP_TOKENS=f"alice={alice}, deploy-bot={bot}")
    for token in (alice, bot, TOKEN):
        assert call(f"{url}/api/jobs/exports/pause", "POST", token=token).status == 200
    wrong = "alice-token-0123456789abcdeX"
    assert call(f"{url}/api/jobs/exports/resume", "POST", token=wrong).status == 403
    actors = [a["actor"] for a in call(f"{url}/api/audit").json()]
    assert actors == ["http token", "deploy-bot", "alice"]
    refused = process.wait_for(lambda rs: any(r.get("event") == "http_token_refused" for r in rs), what="the refusal")
    assert not any(wrong in line or alice in line for line in process.lines)
    assert [r["path"] for r in refused if r.get("event") == "http_token_refused"] == ["/api/jobs/exports/resume"]


def test_bad_requests_get_an_error_naming_what_is_wrong(deployment: Deployment, host) -> None:
    _process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN)

    def error(path: str, method: str = "GET", **kwargs: object) -> tuple[int, dict]:
        answer = call(f"{url}{path}", method, **kwargs)  # type: ignore[arg-type]
        return answer.status, answer.json()

    status, body = error("/api/jobs/nope")
    assert status == 404 and "no job named 'nope'" in body["error"] and "exports" in body["error"]
    assert error("/api/runs?job=nope")[0] == 404
    assert error("/api/jobs/nope/run", "POST", token=TOKEN)[0] == 404
    for query, param in [
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("limit=%C2%B2", "limit"),  # a superscript two: a digit to str.isdigit, not to int()
        ("status=exploded", "status"),
        ("colour=red", "colour"),
    ]:
        status, body = error(f"/api/runs?{query}")
        assert (status, body["param"]) == (400, param), query
        assert param in body["error"]
    for query, param in [("count=0", "count"), ("count=many", "count"), ("from=now", "from")]:
        status, body = error(f"/api/jobs/exports/next?{query}")
        assert (status, body["param"]) == (400, param), query
        assert param in body["error"]
    status, body = error("/api/jobs/exports/run", "POST", token=TOKEN, body=b'{"slot": "2026-01-05T03:30"}')
    assert (status, body["param"]) == (400, "slot") and "slots around it" in body["error"]
    status, body = error("/api/jobs/exports/run", "POST", token=TOKEN, body=b"[1, 2")
    assert (status, body["param"]) == (400, "body")
    status, body = error("/api/jobs/exports/run", "POST", token=TOKEN, body=b'{"when": "now"}')
    assert (status, body["param"]) == (400, "when")

    # The token: missing is 401 with a challenge, wrong is 403; nothing ran either way.
    answer = call(f"{url}/api/jobs/exports/run", "POST")
    assert answer.status == 401 and answer.headers["www-authenticate"].startswith("Bearer")
    assert call(f"{url}/api/jobs/exports/run", "POST", token="not-" + TOKEN).status == 403
    assert call(f"{url}/api/jobs/exports/pause", "POST", headers={"Authorization": f"Basic {TOKEN}"}).status == 401
    assert deployment.history() == []

    status, body = error("/api/jobs/exports/run", "POST", token=TOKEN, body=b"{" + b" " * 70_000 + b"}")
    assert status == 413 and "larger than" in body["error"]
    status, body = error("/api/jobs", "DELETE")
    assert status == 405 and "DELETE is not allowed on /api/jobs" in body["error"] and "GET" in body["error"]
    assert error("/api/nothing-here")[0] == 404
    page = call(f"{url}/jobs/nope")
    assert page.status == 404 and b"no job named" in page.body and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    page = call(f"{url}/jobs/exports?status=exploded")
    assert page.status == 400 and b"status: expected one of" in page.body
    assert deployment.history() == []


def test_without_a_token_the_write_endpoints_are_off(deployment: Deployment, host) -> None:
    _process, url = _start(deployment, host)
    for action in ("run", "pause", "resume"):
        answer = call(f"{url}/api/jobs/exports/{action}", "POST", token="anything-at-all-0123456789")
        assert answer.status == 403 and "JOBS_HTTP_TOKEN" in answer.json()["error"]
    assert call(f"{url}/api/jobs/exports/run", "POST").status == 403
    assert deployment.history() == []
    assert not any(j["paused"] for j in call(f"{url}/api/jobs").json())


def test_the_job_page_says_whether_actions_are_on_and_shows_options_as_written(deployment: Deployment, host) -> None:
    process, url = _start(deployment, host)
    page = call(f"{url}/jobs/hangs").body.decode()
    assert "timeout 1s ·" in page and "actions are off on this host" in page and "JOBS_HTTP_TOKEN" in page
    assert process.stop() == 0
    _process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN)
    page = call(f"{url}/jobs/hangs").body.decode()
    assert "curl -X POST" in page and "actions are off" not in page  # the line answers: it is all that is said


FIELDS_JOBS = """
import logging
from jobhost import job, every

log = logging.getLogger(__name__)

@job(every().day.at("03:00"))
def measures():
    log.info("disk checked", extra={"free_percent": 63, "mount": "/srv"})
"""


def test_a_failed_runs_page_links_to_its_sentry_issue_when_sentry_is_on(deployment: Deployment, host) -> None:
    issues = "https://sentry.example.com/organizations/acme/issues/?query=run_id:{run_id}"
    # A DSN whose server refuses at once: the events are lost, the page is what is looked at here.
    _process, url = _start(deployment, host, SENTRY_DSN="http://key@127.0.0.1:9/1", SENTRY_ISSUES_URL=issues)
    failed, ok = _run_and_end(deployment, "broken"), _run_and_end(deployment, "exports")
    page = call(f"{url}/runs/{failed}").body.decode()
    assert f'href="https://sentry.example.com/organizations/acme/issues/?query=run_id:{failed}"' in page
    assert 'id="sentry"' not in call(f"{url}/runs/{ok}").body.decode()  # a success was never reported


def test_the_run_page_shows_the_fields_a_job_logged(deployment: Deployment, host) -> None:
    _process, url = serving(deployment, host, FIELDS_JOBS, JOBS_HTTP_TOKEN=TOKEN)
    run_id = _run(url, "measures")
    _ended(url, run_id)

    def shown() -> str | None:
        page = call(f"{url}/runs/{run_id}").body.decode()
        return page if "disk checked" in page else None

    page = wait_until(shown, 30, "the run page to show the job's line")
    assert 'class="field">free_percent=63</span>' in page and 'class="field">mount=/srv</span>' in page


def test_the_token_is_kept_from_jobs(deployment: Deployment, host, tmp_path: Path) -> None:
    """Set in the host's real environment, the token is in no place a job can read it."""
    deployment.write(
        "spy",
        f"""
        import json, os, posix
        from jobhost import job, every

        @job(every().day.at("07:00"))
        def spy():
            places = {{
                "os.environ": os.environ.get("JOBS_HTTP_TOKEN", ""),
                "posix.environ": posix.environ.get(b"JOBS_HTTP_TOKEN", b"").decode(),
                "/proc/self/environ": open("/proc/self/environ", "rb").read().decode(),
                "/proc/<host pid>/environ": open(f"/proc/{{os.getppid()}}/environ", "rb").read().decode(),
            }}
            open({str(tmp_path / "seen")!r}, "w").write(json.dumps(places))
        """,
    )
    _process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN)
    _ended(url, _run(url, "spy"))  # the host has the token still: the POST was let in
    seen = json.loads((tmp_path / "seen").read_text())
    assert len(seen) == 4 and [place for place, text in seen.items() if TOKEN in text] == []


def test_metrics_match_history(deployment: Deployment, host) -> None:
    process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN, JOBS_STOP_GRACE="1s")
    runs = [_run(url, job) for job in ("exports", "exports", "broken", "hangs", "exports")]
    for run_id in runs:
        _ended(url, run_id)
    sleeper = _run(url, "sleeper")
    process.wait_for(lambda rs: bool(events(rs, "sleeper", "run_started")), 30, "the sleeper to start")

    def scrape() -> dict:
        return {f.name: f for f in text_string_to_metric_families(call(f"{url}/metrics").body.decode())}

    # run_started is logged as the run is forked; the gauge counts it once forked.
    families = wait_until(
        lambda: (f := scrape())["jobhost_runs_in_flight"].samples[0].value == 1 and f, 10, "the sleeper in flight"
    )
    history = deployment.history()
    counted = {
        (s.labels["job"], s.labels["status"]): s.value
        for s in families["jobhost_runs"].samples
        if s.name == "jobhost_runs_total" and s.value
    }
    expected: dict[tuple[str, str], float] = {}
    for record in history:
        if record["status"] != "running":
            key = (record["job"], record["status"])
            expected[key] = expected.get(key, 0) + 1
    assert counted == expected == {("exports", "succeeded"): 3, ("broken", "failed"): 1, ("hangs", "timed_out"): 1}

    durations = {
        s.labels["job"]: s.value for s in families["jobhost_run_duration_seconds"].samples if s.name.endswith("_count")
    }
    assert durations == {"exports": 3, "broken": 1, "hangs": 1}
    hang_sum = next(
        s.value
        for s in families["jobhost_run_duration_seconds"].samples
        if s.name.endswith("_sum") and s.labels["job"] == "hangs"
    )
    assert hang_sum == pytest.approx(next(r for r in history if r["job"] == "hangs")["duration_ms"] / 1000, abs=0.01)

    newest_success = next(r for r in history if r["status"] == "succeeded")
    last_success = {s.labels["job"]: s.value for s in families["jobhost_last_success_timestamp_seconds"].samples}
    assert last_success == {"exports": pytest.approx(dt.datetime.fromisoformat(newest_success["ended"]).timestamp())}
    assert families["jobhost_runs_queued"].samples[0].value == 0
    assert families["jobhost_heartbeat_timestamp_seconds"].samples[0].value > 0
    assert [r["run_id"] for r in history if r["status"] == "running"] == [sleeper]

    # A restarted host reads the last success from history: an alert on it survives a deploy.
    assert process.stop() == 0
    process, url = _start(deployment, host)
    families = scrape()
    after = {s.labels["job"]: s.value for s in families["jobhost_last_success_timestamp_seconds"].samples}
    assert after == last_success
    # The log lines of the runs before the restart come from the state store now.
    kept = call(f"{url}/api/runs/{runs[2]}").json()["log"]
    assert any("ValueError: bad row 7" in (line["traceback"] or "") for line in kept["lines"])
    assert any(
        line["message"] == "exported 3 rows" for line in call(f"{url}/api/runs/{runs[0]}").json()["log"]["lines"]
    )
    interrupted = call(f"{url}/api/runs/{sleeper}").json()
    assert interrupted["status"] == "interrupted" and interrupted["log"]["lines"][-1]["event"] == "run_interrupted"


def test_healthz_follows_the_loops_heartbeat(deployment: Deployment, host) -> None:
    _process, url = _start(deployment, host, JOBS_HEARTBEAT_INTERVAL="1s")
    answer = call(f"{url}/healthz")
    assert answer.status == 200 and answer.json()["healthy"] is True

    # Another process holds the state file's write lock: the loop cannot record its beat.
    state = Path(deployment.env["JOBS_STATE_URL"].removeprefix("sqlite:///"))
    blocker = sqlite3.connect(state, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        stale = wait_until(lambda: (a := call(f"{url}/healthz")).status == 503 and a, 30, "healthz to turn 503")
        assert "the loop is stuck" in stale.json()["message"]
        assert stale.json()["healthy"] is False
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_until(lambda: call(f"{url}/healthz").status == 200, 30, "healthz to recover")


def test_a_forked_run_holds_no_socket_of_the_server(deployment: Deployment, host) -> None:
    process, url = _start(deployment, host, JOBS_HTTP_TOKEN=TOKEN)
    run_id = _run(url, "sleeper")
    process.wait_for(lambda rs: bool(events(rs, "sleeper", "run_started")), 30, "the sleeper to start")
    pid = wait_until(lambda: call(f"{url}/api/runs/{run_id}").json()["pid"], 10, "the run's pid")
    assert pid != process.proc.pid
    sockets = {link for link in _links(pid) if link.startswith("socket:")}  # a shared one: the same inode
    host_sockets = {link for link in _links(process.proc.pid) if link.startswith("socket:")}
    assert host_sockets and not sockets & host_sockets


def _links(pid: int) -> set[str]:
    """What the process's descriptors point at now; one closed while they are read is left out."""
    links = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            links.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return links


def test_an_address_that_cannot_be_bound_stops_the_start(deployment: Deployment, host) -> None:
    deployment.write("work", JOBS)
    first = host(JOBS_HTTP_ADDR="127.0.0.1:0")
    taken = base_url(first).rsplit(":", 1)[1]
    (deployment.tmp / "other").mkdir()
    other = Deployment(deployment.tmp / "other")
    other.write("work", JOBS)
    result = subprocess.run(
        [sys.executable, "jobs.py"],
        env={**other.env, "JOBS_HTTP_ADDR": f"127.0.0.1:{taken}"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 2
    failure = [json.loads(line) for line in result.stdout.splitlines() if "host_start_failed" in line]
    assert failure and "JOBS_HTTP_ADDR" in failure[0]["message"] and taken in failure[0]["message"]


def test_runs_forked_while_the_server_reads_the_store_do_not_hang(deployment: Deployment, host) -> None:
    # SQLite takes locks of its own without the GIL: a run forked while a server thread held one
    # would hang at its first use of sqlite3. Runs every second, the status page asked for meanwhile.
    deployment.write(
        "local_db",
        """
        import sqlite3
        from jobhost import job, every

        for number in range(5):
            @job(every(1).seconds, name=f"tally_{number}", timeout="3s", catchup="none")
            def tally():
                with sqlite3.connect(":memory:") as db:
                    db.execute("CREATE TABLE t (n)")
                    db.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(2000)])
                    assert db.execute("SELECT sum(n) FROM t").fetchone() == (1999000,)
        """,
    )
    process = host(JOBS_HTTP_ADDR="127.0.0.1:0")
    url = base_url(process)
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            for path in ("/api/runs?limit=200", "/", "/metrics", "/healthz"):
                call(url + path)

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for asker in askers:
        asker.start()
    try:
        process.wait_for(lambda rs: len([r for r in rs if r.get("event") == "run_succeeded"]) >= 50, 60, "50 runs")
    finally:
        stop.set()
        for asker in askers:
            asker.join(30)
    ended = [r for r in process.records() if r.get("event", "").startswith("run_") and r.get("duration_ms") is not None]
    assert ended and {r["event"] for r in ended} == {"run_succeeded"}, [
        r for r in ended if r["event"] != "run_succeeded"
    ]
