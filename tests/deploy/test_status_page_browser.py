"""The status page in a real headless Chromium (Debian's, driven by its ChromeDriver), as an
operator sees it at 2 a.m.: the jobs, the failure marked, and the page following a run to
its end without a reload. Screenshots are left in var/test-artifacts/ (or $JOBHOST_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobhost.release import short
from tests.conftest import ROOT, Deployment, events, require
from tests.support.http_client import base_url, call

TOKEN = "browser-test-token-0123456789"
ARTIFACTS = Path(os.environ.get("JOBHOST_ARTIFACTS", ROOT / "var" / "test-artifacts"))
WAIT = 30  # seconds any one thing may take to appear

JOBS = """
import logging, time
from pathlib import Path
from jobhost import job, every

GATE = Path({gate!r})

@job(every().day.at("03:00"))
def nightly_export():
    print("exported 1,204 rows")

@job(every().day.at("04:00"))
def load_partner_feed():
    logging.getLogger("feed").error("partner answered 502 three times")
    raise ConnectionError("partner feed unreachable after 3 tries")

@job(every().day.at("05:00"))
def slow_rollup():
    while not GATE.exists():  # held until the test opens the gate
        time.sleep(0.05)
    print("rolled up")
"""


@pytest.fixture
def browser() -> Iterator[object]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    require(
        "Chromium and ChromeDriver",
        bool(chromium and driver),
        "install Debian's chromium and chromium-driver (./dev test does as root)",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # type: ignore[assignment]
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",  # no calls home: this network is closed
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to see what the console says
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(WAIT)
    yield session
    session.quit()


def _run(url: str, job: str) -> str:
    answer = call(f"{url}/api/jobs/{job}/run", "POST", token=TOKEN)
    assert answer.status == 202, answer.body
    return answer.json()["run_id"]


def test_the_status_page_shows_jobs_failures_and_follows_a_run(
    deployment: Deployment, host, browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    gate = tmp_path / "gate"
    deployment.write("feeds", JOBS.format(gate=str(gate)))
    process = host(JOBS_HTTP_ADDR="127.0.0.1:0", JOBS_HTTP_TOKEN=TOKEN)
    url = base_url(process)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, WAIT)

    ok, failed = _run(url, "nightly_export"), _run(url, "load_partner_feed")
    process.wait_for(
        lambda rs: events(rs, "nightly_export", "run_succeeded") and events(rs, "load_partner_feed", "run_failed"),
        WAIT,
        "both runs to end",
    )

    browser.get(f"{url}/?refresh=1")
    rows = {row.get_attribute("data-job"): row for row in browser.find_elements(By.CSS_SELECTOR, "tr.job")}
    assert set(rows) == {"nightly_export", "load_partner_feed", "slow_rollup"}
    assert rows["load_partner_feed"].get_attribute("data-last-status") == "failed"
    assert "tone-bad" in rows["load_partner_feed"].get_attribute("class")
    assert rows["load_partner_feed"].find_element(By.CSS_SELECTOR, "a.badge.bad").text == "failed"
    assert rows["nightly_export"].find_element(By.CSS_SELECTOR, "a.badge.ok").text == "succeeded"
    assert "every day at 03:00" in rows["nightly_export"].text
    assert rows["slow_rollup"].get_attribute("data-last-status") == ""
    assert browser.find_element(By.ID, "health").text == "healthy"
    release = call(f"{url}/healthz").json()["release"]  # the header names the release the loop runs
    assert browser.find_element(By.ID, "release").text.startswith(f"release {short(release)}, up since ")
    ticks = browser.find_elements(By.CSS_SELECTOR, "tr.job a.tick")
    assert len(ticks) == 2 and all(tick.size["height"] > 0 and tick.size["width"] > 0 for tick in ticks)
    browser.save_screenshot(str(ARTIFACTS / "status-page.png"))

    # A run starts and ends while the page is open: the page follows it, no reload.
    browser.execute_script("document.body.dataset.marker = 'same page'")
    _run(url, "slow_rollup")
    wait.until(lambda b: _status_of(b, "slow_rollup") == "running")
    assert browser.find_element(By.ID, "in-flight").text == "1 running"
    gate.touch()
    wait.until(lambda b: _status_of(b, "slow_rollup") == "succeeded")
    assert browser.find_element(By.ID, "in-flight").text == "0 running"
    assert browser.execute_script("return document.body.dataset.marker") == "same page"
    assert _status_of(browser, "load_partner_feed") == "failed"  # and the rest stays as it was
    browser.save_screenshot(str(ARTIFACTS / "status-page-after-run.png"))

    # The failed job's page: its run marked, and the run's page with its log lines and traceback.
    _run(url, "load_partner_feed")
    browser.find_element(By.LINK_TEXT, "load_partner_feed").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "tr.run[data-status='failed']")) == 2)
    # Choosing a status in the filter shows only those runs: this job has no succeeded one.
    Select(browser.find_element(By.NAME, "status")).select_by_visible_text("succeeded")
    wait.until(lambda b: "status=succeeded" in b.current_url)
    assert browser.find_elements(By.CSS_SELECTOR, "tr.run") == []
    assert "no runs with status succeeded" in browser.find_element(By.CSS_SELECTOR, "table.runs").text
    browser.back()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f"tr.run[data-run='{failed}']"))
    run_row = browser.find_element(By.CSS_SELECTOR, f"tr.run[data-run='{failed}']")
    assert run_row.get_attribute("data-status") == "failed" and "tone-bad" in run_row.get_attribute("class")
    assert "ConnectionError: partner feed unreachable after 3 tries" in run_row.text
    run_row.find_element(By.TAG_NAME, "a").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "table.log tr.line"))
    assert browser.find_element(By.ID, "status").text == "failed"
    errors = browser.find_elements(By.CSS_SELECTOR, "table.log tr.level-error")
    assert any("partner answered 502 three times" in line.text for line in errors)
    assert any("ConnectionError" in line.text for line in errors)  # the failure line, with its traceback
    browser.save_screenshot(str(ARTIFACTS / "run-page.png"))

    # Nothing on the pages broke their Content-Security-Policy (no inline style or script).
    complaints = [
        entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]
    ]
    assert complaints == []

    # What the page showed is what history says.
    history = {r["run_id"]: r["status"] for r in json.loads(deployment.cli("history", "--json").stdout)}
    assert history[ok] == "succeeded" and history[failed] == "failed"


def _status_of(browser: object, job: str) -> str | None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        row = browser.find_element(By.CSS_SELECTOR, f"tr.job[data-job='{job}']")  # type: ignore[attr-defined]
        return row.get_attribute("data-last-status")
    except StaleElementReferenceException:  # swapped by the refresh meanwhile: ask again
        return None


ACTING_JOBS = """
import subprocess, time
from jobhost import job, every

@job(every().day.at("03:00"))
def nightly_export(rows: int = 10, region: str = "eu"):
    print(f"exported {{rows}} rows for {{region}}")

@job(every().day.at("04:00"))
def load_partner_feed():
    raise ConnectionError("partner feed unreachable after 3 tries")

@job(every().day.at("05:00"))
def slow_rollup():
    helper = subprocess.Popen(["sleep", "300"])
    with open({pidfile!r}, "w") as pids:
        pids.write(str(helper.pid))
    time.sleep(300)
"""


def _fill(form: object, values: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    for name, value in values.items():
        field = form.find_element(By.NAME, name)  # type: ignore[attr-defined]
        field.clear()
        field.send_keys(value)


def test_the_pages_act_with_a_token_and_not_without(deployment: Deployment, host, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    pidfile = tmp_path / "helper.pid"
    deployment.write("feeds", ACTING_JOBS.format(pidfile=str(pidfile)))
    seeded = _seed_a_day(deployment, tmp_path)
    process = host(JOBS_HTTP_ADDR="127.0.0.1:0", JOBS_HTTP_TOKEN=TOKEN)
    url = base_url(process)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, WAIT)
    _run(url, "load_partner_feed")
    process.wait_for(lambda rs: events(rs, "load_partner_feed", "run_failed"), WAIT, "the failure")

    # Without the token: the buttons are off, and nothing was asked of the host.
    browser.get(f"{url}/jobs/nightly_export")
    form = browser.find_element(By.CSS_SELECTOR, "#job-actions form[data-post$='/run']")
    assert not form.find_element(By.CSS_SELECTOR, "button[type=submit]").is_enabled()
    assert browser.find_element(By.ID, "failing").text == "1 failing"
    assert json.loads(deployment.cli("audit", "--json").stdout) == [
        a for a in json.loads(deployment.cli("audit", "--json").stdout) if a["target"] == "load_partner_feed"
    ]

    # A wrong token is refused and forgotten; the right one is used.
    _fill(browser.find_element(By.CSS_SELECTOR, "form.token-set"), {"token": "not-the-token-0123456789"})
    browser.find_element(By.CSS_SELECTOR, "form.token-set button").click()
    form = browser.find_element(By.CSS_SELECTOR, "#job-actions form[data-post$='/run']")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda b: "token" in form.find_element(By.TAG_NAME, "output").text)
    assert not form.find_element(By.CSS_SELECTOR, "button[type=submit]").is_enabled()  # forgotten
    assert {r["run_id"] for r in deployment.history("nightly_export")} <= seeded  # nothing was run
    assert browser.find_element(By.ID, "token-state").text.startswith("no token")
    _fill(browser.find_element(By.CSS_SELECTOR, "form.token-set"), {"token": TOKEN})
    browser.find_element(By.CSS_SELECTOR, "form.token-set button").click()
    assert browser.find_element(By.ID, "token-state").text == "token set for this tab"
    assert "token" not in browser.current_url and browser.get_cookies() == []

    # Run now with parameters from the form made of the signature.
    form = browser.find_element(By.CSS_SELECTOR, "#job-actions form[data-post$='/run']")
    _fill(form, {"param.rows": "25", "param.region": "us"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda b: "run asked for: run " in form.find_element(By.TAG_NAME, "output").text)
    process.wait_for(lambda rs: events(rs, "nightly_export", "run_succeeded"), WAIT, "the run with parameters")
    [record] = [r for r in deployment.history("nightly_export") if r["run_id"] not in seeded]
    assert (record["params"], record["requested_by"]) == ({"rows": 25, "region": "us"}, "http token")

    # A past slot run again from the form: the slot field.
    form = browser.find_element(By.CSS_SELECTOR, "#job-actions form[data-post$='/run']")
    _fill(form, {"param.rows": "", "param.region": "", "slot": "2026-11-30T03:00"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda b: "run asked for: run " in form.find_element(By.TAG_NAME, "output").text)
    process.wait_for(
        lambda rs: any(r["slot"].startswith("2026-11-30T03:00") for r in events(rs, "nightly_export", "run_succeeded")),
        WAIT,
        "the run of the slot named in the form",
    )

    # Cancel a long run (and the helper it started) from its page.
    run_id = _run(url, "slow_rollup")
    helper = int(wait.until(lambda b: pidfile.exists() and pidfile.read_text().strip()))
    browser.get(f"{url}/runs/{run_id}")
    browser.find_element(By.ID, "cancel").click()
    wait.until(lambda b: _text(b, "status") == "cancelled")  # the page follows the run to its end
    wait.until(lambda b: not _alive(helper))
    browser.save_screenshot(str(ARTIFACTS / "run-cancelled.png"))

    # Pause with a reason and an end, from the job's page.
    browser.get(f"{url}/jobs/load_partner_feed")
    form = browser.find_element(By.CSS_SELECTOR, "#job-actions form[data-post$='/pause']")
    _fill(form, {"reason": "partner migrating", "for": "2h"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda b: "Paused by http token" in (_text(b, "main") or ""))
    assert "partner migrating" in (_text(browser, "main") or "")

    # Freeze every job from the status page, and resume.
    browser.get(f"{url}/")
    form = browser.find_element(By.CSS_SELECTOR, "#host-actions form[data-post='/api/freeze']")
    _fill(form, {"reason": "deploy window"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda b: b.find_elements(By.ID, "freeze"))
    browser.find_element(By.CSS_SELECTOR, "#host-actions form[data-post='/api/thaw'] button").click()
    wait.until(lambda b: not b.find_elements(By.ID, "freeze"))

    # The timeline shows the runs that happened, each a bar with its outcome.
    bars = {bar.get_attribute("data-run"): bar for bar in browser.find_elements(By.CSS_SELECTOR, "#timeline rect.run")}
    history = {r["run_id"]: r for r in json.loads(deployment.cli("history", "--json", "--limit", "1000").stdout)}
    assert set(bars) == {r for r, h in history.items() if h["started"]} and seeded <= set(bars)
    assert "bad" in bars[next(r for r, h in history.items() if h["status"] == "failed")].get_attribute("class")
    assert "warn" in bars[run_id].get_attribute("class")  # cancelled
    assert all(float(bar.get_attribute("width")) >= 2 for bar in bars.values())
    browser.save_screenshot(str(ARTIFACTS / "timeline.png"))
    browser.get(f"{url}/jobs/nightly_export")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#durations rect.run")) == 2 + 8  # today's two and the seeded
    browser.save_screenshot(str(ARTIFACTS / "durations.png"))

    actions = [(a["action"], a["actor"]) for a in json.loads(deployment.cli("audit", "--json").stdout)]
    assert actions[:5] == [("thaw", "http token"), ("freeze", "http token"), ("pause", "http token"),
                           ("cancel", "http token"), ("run", "http token")]  # fmt: skip
    browser.get(f"{url}/audit")
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.audit tr.action")) == len(actions)
    complaints = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert complaints == []


def _seed_a_day(deployment: Deployment, tmp_path: Path) -> set[str]:
    """The runs of the last 24 hours a real host would have left (every 3 hours, some failing), so
    the timeline has a day to draw; their ids."""
    import datetime as dt

    from jobhost.outcomes import RunStatus
    from jobhost.store import RunRecord, open_store

    store = open_store(deployment.env["JOBS_STATE_URL"], tmp_path)
    now = dt.datetime.now(dt.UTC)
    seeded = set()
    for hours in range(3, 25, 3):
        for job, took, status in (
            ("nightly_export", 40, RunStatus.SUCCEEDED),
            ("load_partner_feed", 5, RunStatus.FAILED if hours % 2 else RunStatus.SUCCEEDED),
            ("slow_rollup", 70, RunStatus.SUCCEEDED if hours != 9 else RunStatus.TIMED_OUT),
        ):
            started = now - dt.timedelta(hours=hours)
            ended = started + dt.timedelta(minutes=took)
            run_id = f"seed-{job}-{hours}"
            store.add_run(RunRecord(run_id, job, started, 1, status, "", started, ended, took * 60_000, "vm"))
            seeded.add(run_id)
    store.close()
    return seeded


def _text(browser: object, element_id: str) -> str | None:
    """The text of an element of the page's main part, which the refresh swaps now and then."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return browser.find_element(By.ID, element_id).text  # type: ignore[attr-defined]
    except (StaleElementReferenceException, NoSuchElementException):
        return None


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1][0] != "Z"  # a zombie is gone for our purpose
    except OSError:
        return False
