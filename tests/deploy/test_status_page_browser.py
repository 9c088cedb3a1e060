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
