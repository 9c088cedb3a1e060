"""The command line as a user meets it: exit codes, messages without tracebacks, JSON output."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT, Deployment, events

GOOD = """
import datetime
from pathlib import Path
from jobhost import job, every, cron

@job(every(10).minutes)
def pull_rates():
    pass

@job(every().day.at("02:30", "Europe/London"), timeout="45m", retries=2)
def build_summary():
    pass

@job(cron("0 6 * * mon-fri", tz="America/New_York"))
def poll_partner():
    pass

@job(every().day.at("01:00", "UTC"), catchup="all")
def load_partition(slot: datetime.datetime):
    Path(__file__).with_name("slot.txt").write_text(slot.isoformat())
"""

BAD = """
from jobhost import job, every, cron

@job(every(10).minutes, timout="5m")
def typo_option():
    pass

@job(every(10).minutes, timeout="5 minutez")
def bad_timeout():
    pass

@job(cron("61 * * * *"))
def bad_cron():
    pass

@job(every(5).to(10).minutes)
def random_interval():
    pass

@job(every(1).hours, after="does_not_exist")
def lonely():
    pass

@job(every(1).hours, name="pull_rates")
def duplicate():
    pass
"""


def test_check_lists_every_problem_with_file_and_line(deployment: Deployment) -> None:
    deployment.write("good", GOOD)
    path = deployment.write("bad", BAD)
    deployment.write("broken", "from jobhost import job\n\ndef oops(:\n    pass\n")
    result = deployment.cli("check")
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    problems = [line for line in lines if not line.startswith("jobhost:")]
    assert len(problems) == 7, result.stderr
    expected = {
        "typo_option": (4, "did you mean 'timeout'"),
        "bad_timeout": (8, "5 minutez"),
        "bad_cron": (12, "Bad minute"),
        "random_interval": (16, "every(5).minutes"),
        "lonely": (20, "does_not_exist"),
    }
    for job, (line, words) in expected.items():
        [match] = [p for p in problems if f"job {job!r}" in p]
        assert match.startswith(f"{path}:{line}: ") or f"bad.py:{line}: " in match, match
        assert words in match, match
    [duplicate] = [p for p in problems if "job 'pull_rates'" in p]
    assert "already used" in duplicate and "bad.py:24" in duplicate and "good.py:6" in duplicate
    assert any("broken.py:3:" in p and "SyntaxError" in p for p in problems)


def test_check_passes_on_good_jobs(deployment: Deployment) -> None:
    deployment.write("good", GOOD)
    result = deployment.cli("check")
    assert (result.returncode, result.stdout.strip()) == (0, "ok: 4 jobs")


def test_the_host_refuses_to_start_with_bad_definitions(deployment: Deployment) -> None:
    deployment.write("bad", BAD)
    result = deployment.cli()
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len([r for r in records if r.get("event") == "job_invalid"]) == 5
    assert records[-1]["event"] == "host_start_failed"
    assert not result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JOBS_MAX_WORKERS", "abc"),
        ("JOBS_LOG_FORMAT", "xml"),
        ("JOBS_STOP_GRACE", "soon"),
        ("JOBS_TIMEZONE", "Mars/Olympus"),
        ("JOBS_STATE_URL", "mysql://db/jobs"),
    ],
)
def test_a_bad_setting_stops_the_host_naming_the_variable(deployment: Deployment, variable: str, value: str) -> None:
    deployment.write("good", GOOD)
    result = deployment.cli("list", **{variable: value})
    assert result.returncode == 2
    assert variable in result.stderr and "expected" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    forever = deployment.cli(**{variable: value})
    assert forever.returncode == 2
    [line] = forever.stdout.splitlines()  # the log stream stays JSON, even before logging is set up
    assert variable in json.loads(line)["message"]
    assert "Traceback" not in result.stdout + result.stderr


def test_an_unusable_state_path_is_named(deployment: Deployment) -> None:
    deployment.write("good", GOOD)
    blocker = deployment.tmp / "a-file"
    blocker.write_text("")
    result = deployment.cli("list", JOBS_STATE_URL=f"sqlite:///{blocker}/state.sqlite3")
    assert result.returncode == 2
    assert "JOBS_STATE_URL" in result.stderr and "Traceback" not in result.stderr


def test_run_of_an_unknown_job_names_the_jobs(deployment: Deployment) -> None:
    deployment.write("good", GOOD)
    result = deployment.cli("run", "pull_ratez")
    assert result.returncode == 2
    assert "pull_rates" in result.stderr and "build_summary" in result.stderr


def test_list_json_has_the_contract_fields(deployment: Deployment) -> None:
    deployment.write("good", GOOD)
    jobs = {j["name"]: j for j in json.loads(deployment.cli("list", "--json").stdout)}
    assert set(jobs) == {"pull_rates", "build_summary", "poll_partner", "load_partition"}
    summary = jobs["build_summary"]
    assert {"name", "schedule", "timezone", "next_slot", "last_status", "paused"} <= set(summary)
    assert (summary["timezone"], summary["timeout"], summary["retries"]) == ("Europe/London", 2700.0, 2)
    assert dt.datetime.fromisoformat(summary["next_slot"]).astimezone(dt.UTC) > dt.datetime.now(dt.UTC)
    assert jobs["load_partition"]["catchup"] == "all"


def test_next_prints_slots_in_the_jobs_zone(deployment: Deployment) -> None:
    deployment.write("good", GOOD)
    result = deployment.cli("next", "build_summary", "--from", "2026-03-27T12:00:00+00:00", "--count", "3")
    assert result.stdout.split() == [
        "2026-03-28T02:30:00+00:00",
        "2026-03-29T02:30:00+01:00",
        "2026-03-30T02:30:00+01:00",
    ]
    result = deployment.cli("next", "poll_partner", "--from", "2026-11-27T12:00", "--count", "2")
    assert result.stdout.split() == ["2026-11-30T06:00:00-05:00", "2026-12-01T06:00:00-05:00"]
    assert deployment.cli("next", "poll_partner", "--from", "yesterday").returncode == 2


def test_run_passes_the_slot_and_history_json_follows_the_contract(deployment: Deployment) -> None:
    deployment.write("good", GOOD)
    result = deployment.cli("run", "load_partition", "--slot", "2026-01-05T01:00")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (deployment.jobs_dir / "slot.txt").read_text() == "2026-01-05T01:00:00+00:00"
    [run] = deployment.history("load_partition")
    assert set(run) >= {
        "run_id", "job", "slot", "attempt", "status", "reason", "started", "ended", "duration_ms", "host", "pid",
    }  # fmt: skip
    assert (run["slot"], run["status"], run["attempt"]) == ("2026-01-05T01:00:00+00:00", "succeeded", 1)
    assert isinstance(run["pid"], int) and run["host"]


def test_pause_and_resume_show_in_list(deployment: Deployment) -> None:
    deployment.write("good", GOOD)
    assert deployment.cli("pause", "pull_rates").returncode == 0
    jobs = {j["name"]: j for j in json.loads(deployment.cli("list", "--json").stdout)}
    assert jobs["pull_rates"]["paused"] is True
    assert deployment.cli("resume", "pull_rates").returncode == 0
    jobs = {j["name"]: j for j in json.loads(deployment.cli("list", "--json").stdout)}
    assert jobs["pull_rates"]["paused"] is False
    assert deployment.cli("pause", "nope").returncode == 2


def test_a_pause_with_a_reason_and_an_end_shows_who_why_and_until_and_is_audited(deployment: Deployment) -> None:
    deployment.write("good", GOOD)
    paused = deployment.cli("pause", "pull_rates", "--reason", "rates API down", "--for", "2h")
    assert paused.returncode == 0 and "paused until " in paused.stdout
    [job] = [j for j in json.loads(deployment.cli("list", "--json").stdout) if j["name"] == "pull_rates"]
    pause = job["pause"]
    assert (job["paused"], pause["reason"], pause["by"]) == (True, "rates API down", getpass.getuser())
    until, since = dt.datetime.fromisoformat(pause["until"]), dt.datetime.fromisoformat(pause["since"])
    assert until - since == dt.timedelta(hours=2)
    listed = deployment.cli("list").stdout
    assert f"pull_rates: paused by {getpass.getuser()}" in listed and "rates API down" in listed
    assert "resumes by itself at" in listed
    assert deployment.cli("resume", "pull_rates", "--reason", "API back").returncode == 0
    actions = json.loads(deployment.cli("audit", "--json").stdout)
    assert [(a["action"], a["target"], a["reason"], a["actor"]) for a in actions] == [
        ("resume", "pull_rates", "API back", getpass.getuser()),
        ("pause", "pull_rates", "rates API down", getpass.getuser()),
    ]
    assert actions[1]["detail"] == {"until": pause["until"]}
    assert "rates API down" in deployment.cli("audit", "--since", "1h").stdout
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    assert json.loads(deployment.cli("audit", "--json", "--since", tomorrow).stdout) == []


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--until", "2020-01-01T00:00"], "--until"),
        (["--until", "tomorrow"], "--until"),
        (["--for", "soon"], "--for"),
        (["--for", "1h", "--until", "2099-01-01T00:00"], "--until"),
    ],
)
def test_a_pause_with_a_bad_end_is_refused_naming_the_option_and_changes_nothing(
    deployment: Deployment, args: list[str], named: str
) -> None:
    deployment.write("good", GOOD)
    refused = deployment.cli("pause", "pull_rates", *args)
    assert refused.returncode == 2 and named in refused.stderr
    [job] = [j for j in json.loads(deployment.cli("list", "--json").stdout) if j["name"] == "pull_rates"]
    assert job["paused"] is False and json.loads(deployment.cli("audit", "--json").stdout) == []


def test_a_paused_job_is_skipped_by_the_loop(deployment: Deployment, host) -> None:
    deployment.write(
        "fast",
        """
        from jobhost import job, every

        @job(every(1).seconds)
        def fast():
            pass
        """,
    )
    deployment.cli("pause", "fast")
    process = host()
    process.wait_for(lambda rs: any(r.get("event") == "run_skipped" for r in rs), what="a skipped slot")
    process.stop()
    runs = deployment.history("fast")
    assert runs and {r["status"] for r in runs} == {"skipped"}
    assert all(r["reason"] == "paused" for r in runs)


def test_every_command_has_help(deployment: Deployment) -> None:
    for command in ["list", "run", "check", "history", "pause", "resume", "next"]:
        result = deployment.cli(command, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, command
    assert deployment.cli("no-such-command").returncode == 2


def test_output_while_importing_jobs_stays_json(deployment: Deployment) -> None:
    deployment.write(
        "chatty",
        """
        import sys
        from jobhost import job, every

        print("loading chatty", end="")
        print("a warning on stderr", file=sys.stderr)

        @job(every(1).hours)
        def chatty():
            pass
        """,
    )
    result = deployment.cli("run", "chatty")
    assert result.returncode == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    imported = {r["message"]: r["stream"] for r in records if r["logger"] == "jobhost.import"}
    assert imported == {"loading chatty": "stdout", "a warning on stderr": "stderr"}


def test_run_slot_must_be_a_slot_and_wall_times_follow_the_dst_policy(deployment: Deployment) -> None:
    deployment.write(
        "nightly",
        """
        from pathlib import Path
        from jobhost import job, every

        @job(every().day.at("02:30", "America/New_York"))
        def nightly(slot):
            Path(__file__).with_name("slot.txt").write_text(slot.isoformat())
        """,
    )
    wrong = deployment.cli("run", "nightly", "--slot", "2026-03-07T02:31")
    assert wrong.returncode == 2
    assert "is not a slot of nightly" in wrong.stderr and "2026-03-07T02:30:00-05:00" in wrong.stderr
    # 02:30 does not exist on 8 March in New York: that day's slot is the end of the gap.
    assert deployment.cli("run", "nightly", "--slot", "2026-03-08T02:30").returncode == 0
    assert (deployment.jobs_dir / "slot.txt").read_text() == "2026-03-08T03:00:00-04:00"


def test_next_past_the_end_of_the_calendar_is_a_message(deployment: Deployment) -> None:
    deployment.write(
        "yearly", "from jobhost import job, cron\n\n@job(cron('0 0 1 1 *', tz='UTC'))\ndef yearly():\n    pass\n"
    )
    result = deployment.cli("next", "yearly", "--from", dt.date.today().isoformat(), "--count", "100000")
    assert result.returncode == 1
    slots = result.stdout.split()
    assert slots[0] == f"{dt.date.today().year + 1}-01-01T00:00:00+00:00"
    assert (slots[-1], len(slots)) == ("9999-01-01T00:00:00+00:00", 9999 - dt.date.today().year)
    assert "fits the calendar" in result.stderr and "Traceback" not in result.stderr


SLOW = """
import time
from jobhost import job, every

@job(every(1).hours)
def slow():
    print("started", flush=True)
    time.sleep(60)
"""


def _stop_a_foreground_run(deployment: Deployment, signum: signal.Signals) -> tuple[int, list[dict]]:
    """`jobs.py run slow`, sent `signum` once its job has started: its exit status, and its lines after."""
    deployment.write("slow", SLOW)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs.py"), "run", "slow"],
        env=deployment.env,
        stdout=subprocess.PIPE,
        text=True,
        cwd=deployment.tmp,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["message"] == "started":
            break
    proc.send_signal(signum)
    rest = [json.loads(line) for line in proc.stdout]
    return proc.wait(15), rest


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "terminal-closed"])
def test_ctrl_c_stops_a_foreground_run_at_once(deployment: Deployment, signum: signal.Signals) -> None:
    status, _ = _stop_a_foreground_run(deployment, signum)
    assert status == 1
    [run] = deployment.history("slow")
    assert (run["status"], run["reason"]) == ("interrupted", f"stopped by {signum.name}")


def test_the_job_stopped_by_ctrl_c_is_told_so_by_the_same_signal(deployment: Deployment) -> None:
    status, rest = _stop_a_foreground_run(deployment, signal.SIGINT)
    assert status == 1
    [ended] = [r for r in rest if r.get("event") == "run_interrupted"]
    assert ended["reason"] == "stopped by SIGINT"
    assert "stopped by the host (SIGINT)" in ended["exc_info"] and "SIGTERM" not in ended["exc_info"]


EVERY_SLOT = """
from jobhost import job, every

@job(every(1).seconds, catchup="all")
def every_slot(slot):
    pass
"""


def test_a_resumed_job_catches_up_the_slots_it_skipped_while_paused(deployment: Deployment, host) -> None:
    deployment.write("every_slot", EVERY_SLOT)
    assert deployment.cli("run", "every_slot").returncode == 0  # the job now has a settled slot
    deployment.cli("pause", "every_slot")
    process = host(JOBS_HEARTBEAT_INTERVAL="1s")
    records = process.wait_for(lambda rs: len(events(rs, "every_slot", "run_skipped")) >= 3, what="paused slots")
    paused_slots = {r["slot"] for r in events(records, "every_slot", "run_skipped")}
    deployment.cli("resume", "every_slot")
    process.wait_for(
        lambda rs: paused_slots <= {r["slot"] for r in events(rs, "every_slot", "run_succeeded")},
        what="each paused slot to be caught up",
    )
    assert process.stop() == 0
    # The table counts tries as a person does: the skip was none, the run that caught it up the first.
    slot = min(paused_slots)
    rows = [line.split() for line in deployment.cli("history", "every_slot", "--limit", "1000").stdout.splitlines()[1:]]
    assert sorted((row[3], row[4]) for row in rows if row[0] == slot) == [("-", "skipped"), ("1", "succeeded")]
    attempts = sorted(r["attempt"] for r in deployment.history("every_slot", limit=1000) if r["slot"] == slot)
    assert attempts == [1, 2]  # the record keeps the claim's number


def test_a_pause_that_ends_resumes_the_job_by_itself_and_catches_up(deployment: Deployment, host) -> None:
    deployment.write("every_slot", EVERY_SLOT)
    assert deployment.cli("run", "every_slot").returncode == 0  # the job now has a settled slot
    assert deployment.cli("pause", "every_slot", "--for", "3s", "--reason", "short window").returncode == 0
    process = host(JOBS_HEARTBEAT_INTERVAL="1s")
    records = process.wait_for(lambda rs: any(r.get("event") == "job_resumed" for r in rs), what="the pause to end")
    paused_slots = {r["slot"] for r in events(records, "every_slot", "run_skipped")}
    process.wait_for(
        lambda rs: paused_slots <= {r["slot"] for r in events(rs, "every_slot", "run_succeeded")},
        what="each paused slot to be caught up",
    )
    assert process.stop() == 0
    [job] = json.loads(deployment.cli("list", "--json").stdout)
    assert job["paused"] is False
    resumed = json.loads(deployment.cli("audit", "--json").stdout)[0]
    assert (resumed["actor"], resumed["action"]) == ("jobhost", "resume") and "short window" in resumed["reason"]


def test_a_freeze_pauses_every_job_even_one_added_during_it_and_ends_by_itself(deployment: Deployment, host) -> None:
    deployment.write("every_slot", EVERY_SLOT)
    assert deployment.cli("run", "every_slot").returncode == 0  # the job now has a settled slot
    frozen = deployment.cli("pause", "--all", "--for", "4s", "--reason", "deploy window")
    assert frozen.returncode == 0 and "every job (a freeze): paused until" in frozen.stdout
    deployment.write("late_comer", EVERY_SLOT.replace("every_slot", "late_comer"))  # added during the freeze
    listed = deployment.cli("list").stdout
    assert f"every job (a freeze): paused by {getpass.getuser()}" in listed and "deploy window" in listed
    jobs = json.loads(deployment.cli("list", "--json").stdout)
    assert [(j["name"], j["paused"], j["pause"], j["freeze"]["reason"]) for j in jobs] == [
        ("every_slot", True, None, "deploy window"),
        ("late_comer", True, None, "deploy window"),
    ]
    process = host(JOBS_HEARTBEAT_INTERVAL="1s")
    records = process.wait_for(lambda rs: any(r.get("event") == "jobs_thawed" for r in rs), what="the freeze to end")
    assert events(records, "late_comer", "run_skipped")  # frozen too, though added after the freeze began
    paused_slots = {r["slot"] for r in events(records, "every_slot", "run_skipped")}
    process.wait_for(
        lambda rs: paused_slots <= {r["slot"] for r in events(rs, "every_slot", "run_succeeded")},
        what="each slot skipped in the freeze to be caught up",
    )
    assert process.stop() == 0
    assert not any(j["paused"] for j in json.loads(deployment.cli("list", "--json").stdout))
    actions = json.loads(deployment.cli("audit", "--json").stdout)
    assert [(a["actor"], a["action"], a["target"]) for a in actions[:2]] == [
        ("jobhost", "thaw", "*"),
        (getpass.getuser(), "freeze", "*"),
    ]


def test_a_job_resumed_in_a_freeze_stays_frozen_and_a_thaw_keeps_its_own_pauses(deployment: Deployment) -> None:
    deployment.write("good", GOOD)
    assert deployment.cli("pause", "pull_rates", "--reason", "rates API down").returncode == 0
    assert deployment.cli("pause", "--all", "--reason", "incident").returncode == 0
    assert deployment.cli("resume", "pull_rates").stdout.strip() == (
        f"pull_rates: resumed, but every job is still frozen by {getpass.getuser()}: `resume --all` ends the freeze"
    )
    assert deployment.cli("pause", "pull_rates").returncode == 0
    thawed = deployment.cli("resume", "--all", "--reason", "over")
    assert thawed.stdout.strip() == "every job: resumed; still paused on their own: pull_rates"
    again = deployment.cli("resume", "--all")
    assert (again.returncode, again.stdout.strip()) == (0, "nothing is frozen")
    actions = json.loads(deployment.cli("audit", "--json").stdout)
    assert [a["action"] for a in actions] == ["thaw", "pause", "resume", "freeze", "pause"]  # no record of a no-op
    jobs = {j["name"]: j for j in json.loads(deployment.cli("list", "--json").stdout)}
    assert jobs["pull_rates"]["paused"] and not any(j["paused"] for n, j in jobs.items() if n != "pull_rates")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["pause", "pull_rates", "--reason", "x\npull_rates  succeeded"], "--reason"),
        (["cancel", "pull_rates", "--wait", "nan"], "--wait"),
        (["run", "pull_rates", "--slot", ""], "--slot"),
        (["audit", "--since", "garbage"], "or a duration back from now, such as 24h"),
    ],
)
def test_input_a_record_could_not_keep_honestly_is_refused(deployment: Deployment, args: list[str], named: str) -> None:
    deployment.write("good", GOOD)
    refused = deployment.cli(*args)
    assert refused.returncode == 2 and named in refused.stderr
    assert json.loads(deployment.cli("audit", "--json").stdout) == [] and deployment.history() == []


def test_a_frozen_job_resumed_on_its_own_says_what_keeps_it(deployment: Deployment) -> None:
    deployment.write("good", GOOD)
    assert deployment.cli("pause", "--all").returncode == 0
    said = deployment.cli("resume", "pull_rates").stdout.strip()
    assert (
        said
        == f"pull_rates: not paused on its own, but every job is frozen by {getpass.getuser()}: `resume --all` ends the freeze"
    )


@pytest.mark.parametrize("args", [[], ["pull_rates", "--all"]])
def test_pause_needs_a_job_or_all_but_not_both(deployment: Deployment, args: list[str]) -> None:
    deployment.write("good", GOOD)
    for command in ("pause", "resume"):
        refused = deployment.cli(command, *args)
        assert refused.returncode == 2 and "give a job's NAME or --all" in refused.stderr
    assert json.loads(deployment.cli("audit", "--json").stdout) == []


def test_a_run_by_hand_is_marked_with_who_ran_it_and_audited(deployment: Deployment) -> None:
    deployment.write(
        "quick", "from jobhost import job, every\n\n@job(every().day.at('03:00'))\ndef quick():\n    pass\n"
    )
    assert deployment.cli("run", "quick").returncode == 0
    [run] = deployment.history("quick")
    assert run["requested_by"] == getpass.getuser()
    assert f"by hand: {getpass.getuser()}" in deployment.cli("history", "quick").stdout
    [action] = json.loads(deployment.cli("audit", "--json").stdout)
    assert (action["action"], action["target"], action["detail"]) == ("run", "quick", {"slot": run["slot"]})


PARAMETRIZED = """
import datetime as dt, decimal, json, pathlib
from jobhost import job, every

@job(every().day.at("03:00"))
def export(
    day: dt.date = dt.date(2026, 1, 1),
    at: dt.datetime | None = None,
    limit: int = 100,
    ratio: float = 0.5,
    dry_run: bool = False,
    amount: decimal.Decimal = decimal.Decimal("0"),
    target: pathlib.Path = pathlib.Path("/tmp"),
    label: str = "daily",
):
    got = dict(day=day, at=at, limit=limit, ratio=ratio, dry_run=dry_run, amount=amount, target=target, label=label)
    print(json.dumps({k: [type(v).__name__, str(v)] for k, v in got.items()}))
"""


def test_a_run_with_parameters_gets_each_as_its_type_and_keeps_them(deployment: Deployment) -> None:
    deployment.write("export", PARAMETRIZED)
    given = {
        "day": "2026-11-30",
        "at": "2026-11-30T06:00+01:00",
        "limit": "42",
        "ratio": "0.25",
        "dry_run": "yes",
        "amount": "12.50",
        "target": "/srv/out",
        "label": "by hand",
    }
    done = deployment.cli("run", "export", *(f"--param={k}={v}" for k, v in given.items()))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    [printed] = [json.loads(r["message"]) for r in lines if r.get("stream") == "stdout"]
    assert printed == {
        "day": ["date", "2026-11-30"],
        "at": ["datetime", "2026-11-30 06:00:00+01:00"],
        "limit": ["int", "42"],
        "ratio": ["float", "0.25"],
        "dry_run": ["bool", "True"],
        "amount": ["Decimal", "12.50"],
        "target": ["PosixPath", "/srv/out"],
        "label": ["str", "by hand"],
    }
    stored = {**given, "at": "2026-11-30T06:00:00+01:00", "limit": 42, "ratio": 0.25, "dry_run": True}
    assert all(r["params"] == stored for r in lines if r.get("run_id"))  # on each of the run's lines
    [record] = deployment.history("export")
    assert record["params"] == stored
    [action] = json.loads(deployment.cli("audit", "--json").stdout)
    assert action["detail"]["params"] == stored
    plain = deployment.cli("run", "export")  # without: the function's defaults, and no params kept
    assert plain.returncode == 0 and deployment.history("export")[0]["params"] is None


@pytest.mark.parametrize(
    ("pair", "named"),
    [
        ("limit=ten", "limit: 'ten' is not a whole number"),
        ("day=30/11/2026", "day: '30/11/2026' is not a date"),
        ("dry_run=perhaps", "dry_run: 'perhaps' is not true or false"),
        ("colour=red", "colour: the job takes no such parameter; its parameters: day, at, limit"),
        ("limit", "'limit' is not key=value"),
    ],
)
def test_a_parameter_that_does_not_convert_is_refused_naming_it(deployment: Deployment, pair: str, named: str) -> None:
    deployment.write("export", PARAMETRIZED)
    refused = deployment.cli("run", "export", "--param", pair)
    assert refused.returncode == 2 and named in refused.stderr and "--param" in refused.stderr
    assert deployment.history("export") == [] and json.loads(deployment.cli("audit", "--json").stdout) == []


def test_the_history_table_shows_each_runs_id_and_start(deployment: Deployment) -> None:
    deployment.write(
        "quick", "from jobhost import job, every\n\n@job(every().day.at('03:00'))\ndef quick():\n    pass\n"
    )
    assert deployment.cli("run", "quick").returncode == 0
    [record] = deployment.history("quick")
    shown = deployment.cli("history", "quick")
    header, row = shown.stdout.splitlines()[:2]
    assert header.split()[:6] == ["SLOT", "JOB", "RUN", "TRY", "STATUS", "STARTED"]
    assert row.split()[2] == record["run_id"][:12] and row.split()[5].startswith(record["started"][:19])


QUICK = "from jobhost import job, every\n\n@job(every().day.at('03:00'))\ndef quick(label: str = 'daily'):\n    print(label)\n"


def _soon(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def test_a_run_at_a_later_time_survives_a_restart_and_runs_once_then(deployment: Deployment, host) -> None:
    deployment.write("quick", QUICK)
    first = host()
    first.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), what="the host to start")
    asked = deployment.cli("run", "quick", "--at", _soon(6), "--param", "label=one-off")
    assert asked.returncode == 0, asked.stderr
    run_id = asked.stdout.split()[2]
    assert "quick: one-off run at " in deployment.cli("list").stdout
    [job] = json.loads(deployment.cli("list", "--json").stdout)
    assert [(o["run_id"], o["params"]) for o in job["one_offs"]] == [(run_id, {"label": "one-off"})]
    assert "and a one-off run at" in deployment.cli("next", "quick").stderr
    assert first.stop() == 0  # before its instant
    second = host()
    records = second.wait_for(
        lambda rs: any(r.get("run_id") == run_id and r.get("event") == "run_succeeded" for r in rs),
        what="the one-off run to run at its instant, on the next host",
    )
    assert [r["message"] for r in records if r.get("run_id") == run_id and r.get("stream") == "stdout"] == ["one-off"]
    assert second.stop() == 0
    [record] = [r for r in deployment.history("quick") if r["run_id"] == run_id]
    assert (record["status"], record["one_off"], record["requested_by"]) == ("succeeded", True, getpass.getuser())
    assert dt.datetime.fromisoformat(record["started"]) >= dt.datetime.fromisoformat(record["slot"])
    assert json.loads(deployment.cli("list", "--json").stdout)[0]["one_offs"] == []


def test_a_run_at_a_later_time_cancelled_before_it_starts_never_runs(deployment: Deployment) -> None:
    deployment.write("quick", QUICK)
    run_id = deployment.cli("run", "quick", "--at", _soon(3600)).stdout.split()[2]
    cancelled = deployment.cli("cancel", run_id, "--reason", "not needed")
    assert cancelled.returncode == 0 and "cancelled; it never starts" in cancelled.stdout
    assert json.loads(deployment.cli("list", "--json").stdout)[0]["one_offs"] == []
    again = deployment.cli("cancel", run_id)
    assert again.returncode == 2 and "is cancelled; nothing changed" in again.stderr
    actions = json.loads(deployment.cli("audit", "--json").stdout)
    assert [(a["action"], a["target"]) for a in actions] == [("cancel", run_id), ("run", "quick")]
    assert actions[1]["detail"]["run_id"] == run_id


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--at", "2020-01-01T00:00"], "is not in the future"),
        (["--at", "2030-01-01T03:00"], "is a slot of quick's schedule"),
        (["--at", "soon"], "is not ISO 8601"),
        (["--at", "2030-01-01T04:00", "--slot", "2026-01-01T03:00"], "not both"),
    ],
)
def test_a_run_at_a_bad_time_is_refused_and_nothing_is_kept(
    deployment: Deployment, args: list[str], named: str
) -> None:
    deployment.write("quick", QUICK)
    refused = deployment.cli("run", "quick", *args)
    assert refused.returncode == 2 and named in refused.stderr
    assert json.loads(deployment.cli("list", "--json").stdout)[0]["one_offs"] == []
    assert json.loads(deployment.cli("audit", "--json").stdout) == []
