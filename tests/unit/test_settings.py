"""Settings from the environment: defaults, accepted forms, refusals, and the table in the docs."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from configuration.settings import ROOT, SETTINGS, Settings, docs_settings_table, load_settings
from jobhost.errors import SettingError


def test_defaults(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # the machine's zone, when JOBS_TIMEZONE is unset
    settings = load_settings({})
    assert settings.state_url == "sqlite:///var/jobhost.sqlite3"
    assert settings.log_level == "INFO"
    assert settings.log_format == "json"
    assert settings.max_workers == 4
    assert settings.stop_grace == 30.0
    assert settings.heartbeat_interval == 30.0
    assert settings.timezone == ZoneInfo("Asia/Kolkata")
    assert settings.jobs_dir == ROOT / "jobs"
    assert settings.data_dir == ROOT / "var" / "data"
    assert (settings.log_file, settings.log_max_bytes, settings.log_backups) == (None, 50 * 1024 * 1024, 10)


def test_each_field_of_the_settings_is_filled_by_one_setting():
    assert sorted(s.field for s in SETTINGS) == sorted(f.name for f in dataclasses.fields(Settings))


def test_the_host_name_defaults_to_the_machines():
    assert load_settings({}).host_name == socket.gethostname()


def test_blank_values_mean_the_default():
    assert load_settings({"JOBS_MAX_WORKERS": "  ", "JOBS_LOG_LEVEL": ""}) == load_settings({})


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("JOBS_MAX_WORKERS", " 16 ", "max_workers", 16),
        ("JOBS_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("JOBS_LOG_FORMAT", "Text", "log_format", "text"),
        ("JOBS_STOP_GRACE", "2m", "stop_grace", 120.0),
        ("JOBS_STOP_GRACE", "30", "stop_grace", 30.0),  # "seconds", as the accepts column says
        ("JOBS_TIMEZONE", "Europe/London", "timezone", ZoneInfo("Europe/London")),
        ("JOBS_STATE_URL", "sqlite:////srv/jobs/state.db", "state_url", "sqlite:////srv/jobs/state.db"),
        ("JOBS_DIR", str(ROOT / "tests"), "jobs_dir", ROOT / "tests"),
        ("JOBS_DIR", "jobs", "jobs_dir", ROOT / "jobs"),
        ("JOBS_DATA_DIR", "/var/lib/jobhost/data", "data_dir", Path("/var/lib/jobhost/data")),  # made by the host
        ("JOBS_DATA_DIR", "var/exports", "data_dir", ROOT / "var" / "exports"),
        ("JOBS_PREPARE_AHEAD", "250ms", "prepare_ahead", 0.25),
        ("JOBS_PREPARE_AHEAD", "0", "prepare_ahead", 0.0),
        ("JOBS_HTTP_ADDR", "127.0.0.1:8377", "http_addr", ("127.0.0.1", 8377)),
        ("JOBS_HTTP_ADDR", "[::1]:8080", "http_addr", ("::1", 8080)),
        ("JOBS_HTTP_ADDR", "0.0.0.0:0", "http_addr", ("0.0.0.0", 0)),
        ("JOBS_HTTP_HOSTS", "Jobs.Example.com, jobhost-1,", "http_hosts", ("jobs.example.com", "jobhost-1")),
        ("JOBS_HTTP_HOSTS", "10.0.0.5,[::1]", "http_hosts", ("10.0.0.5", "::1")),
        ("JOBS_LOG_FILE", "/tmp/jobs.log", "log_file", Path("/tmp/jobs.log")),
        ("JOBS_LOG_FILE", "tests/jobs.log", "log_file", ROOT / "tests" / "jobs.log"),  # relative to the checkout
        ("JOBS_LOG_MAX_BYTES", "50MB", "log_max_bytes", 50 * 1024 * 1024),
        ("JOBS_LOG_MAX_BYTES", "300kb", "log_max_bytes", 300 * 1024),
        ("JOBS_LOG_MAX_BYTES", "1000", "log_max_bytes", 1000),
        ("JOBS_LOG_MAX_BYTES", "0", "log_max_bytes", 0),
        ("JOBS_LOG_BACKUPS", "0", "log_backups", 0),
        (
            "SENTRY_ISSUES_URL",
            "https://s.example/issues/?query=run_id:{run_id}",
            "sentry_issues_url",
            "https://s.example/issues/?query=run_id:{run_id}",
        ),
    ],
)
def test_accepted_values(variable, value, field, expected):
    assert getattr(load_settings({variable: value}), field) == expected


@pytest.mark.parametrize(
    ("variable", "value", "accepts"),
    [
        ("JOBS_MAX_WORKERS", "abc", "a whole number from 1 to 256"),
        ("SENTRY_ISSUES_URL", "https://s.example/issues/", "with `{run_id}` in it"),
        ("SENTRY_ISSUES_URL", "ftp://s.example/{run_id}", "an `https://` address"),
        ("SENTRY_ISSUES_URL", "https://s.example/{run_id}/{job}", "with `{run_id}` in it"),
        ("JOBS_MAX_WORKERS", "0", "a whole number from 1 to 256"),
        ("JOBS_MAX_WORKERS", "100000", "a whole number from 1 to 256"),
        ("JOBS_MAX_WORKERS", "9" * 5000, "a whole number from 1 to 256"),
        ("JOBS_HISTORY_DAYS", "1000000", "from 1 to 3650"),
        ("JOBS_STOP_GRACE", "2d", "up to `1d`"),
        ("JOBS_STOP_GRACE", "9" * 400, "up to `1d`"),  # a float of 400 digits is infinity
        ("JOBS_HEARTBEAT_INTERVAL", "0.1", "from `1s` to `1h`"),
        ("JOBS_HEARTBEAT_INTERVAL", "30d", "from `1s` to `1h`"),
        ("JOBS_LEASE", "2s", "from `3s` to `1h`"),
        ("JOBS_LEASE", "2h", "from `3s` to `1h`"),
        ("JOBS_LOG_FORMAT", "xml", "`json` (one object a line) or `text`"),
        ("JOBS_LOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("JOBS_STOP_GRACE", "soon", "a duration such as `30s`, `2m`"),
        ("JOBS_HEARTBEAT_INTERVAL", "0", "a duration such as `30s`, `1m`"),
        ("JOBS_TIMEZONE", "Mars/Base", "an IANA zone such as `Europe/London`"),
        ("JOBS_DIR", "/no/such/jobs", "an existing directory"),
        ("JOBS_PREPARE_AHEAD", "2m", "up to `60s`"),
        ("JOBS_PREPARE_AHEAD", "-1s", "up to `60s`"),
        ("JOBS_HTTP_ADDR", "8377", "`address:port`"),
        ("JOBS_HTTP_ADDR", "localhost:http", "`address:port`"),
        ("JOBS_HTTP_ADDR", "127.0.0.1:70000", "`address:port`"),
        ("JOBS_HTTP_ADDR", ":8377", "`address:port`"),
        ("JOBS_HTTP_HOSTS", "jobs.example.com:443", "without a port"),
        ("JOBS_HTTP_HOSTS", "https://jobs.example.com", "host names or addresses"),
        ("JOBS_LOG_FILE", "/no/such/dir/jobs.log", "its directory /no/such/dir does not exist"),
        ("JOBS_LOG_FILE", "/tmp", "a file path"),
        ("JOBS_LOG_MAX_BYTES", "50 megabytes", "with `KB`, `MB`, `GB`"),
        ("JOBS_LOG_MAX_BYTES", "-1", "with `KB`, `MB`, `GB`"),
        ("JOBS_LOG_MAX_BYTES", "2000GB", "up to 1 TB"),
        ("JOBS_LOG_BACKUPS", "1001", "a whole number from 0 to 1000"),
    ],
)
def test_bad_value_names_the_variable_and_what_it_accepts(variable, value, accepts):
    with pytest.raises(SettingError) as info:
        load_settings({variable: value})
    message = str(info.value)
    assert message.startswith(f"{variable}={value!r} is not valid: ")
    assert accepts in message
    assert info.value.variable == variable


@pytest.mark.parametrize(
    ("variable", "value", "accepts"),
    [
        ("JOBS_STATE_URL", "mysql://admin:hunter2@db/x", "`sqlite:///relative/path`"),
        ("JOBS_STATE_URL", "redis://:pw@cache/0", "`sqlite:////absolute/path`"),
        ("SENTRY_DSN", "htps://secretkey@sentry/3", "a Sentry DSN"),
        ("JOBS_HTTP_TOKEN", "short-token", "16 or more characters"),
        ("JOBS_HTTP_TOKEN", "a token with spaces in it", "no spaces"),
        ("JOBS_HTTP_TOKENS", "alice:0123456789abcdef01", "`name=token` pairs"),
        ("JOBS_HTTP_TOKENS", "alice=short", "`name=token` pairs"),
        ("JOBS_HTTP_TOKENS", "alice=0123456789abcdef01,alice=0123456789abcdef02", "none twice"),
        ("JOBS_HTTP_TOKENS", "alice=0123456789abcdef01,bob=0123456789abcdef01", "none twice"),
        ("JOBS_HTTP_TOKENS", "al ice=0123456789abcdef01", "`name=token` pairs"),
    ],
)
def test_a_bad_secret_is_named_but_never_repeated(variable, value, accepts):
    with pytest.raises(SettingError) as info:
        load_settings({variable: value})
    message = str(info.value)
    assert message.startswith(f"{variable} (value not shown: it may hold a secret) is not valid: ")
    assert accepts in message and value not in message


def test_the_operations_docs_hold_the_generated_settings_table():
    page = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    table = docs_settings_table()
    assert table.count("\n") >= 8  # header, rule and one row per setting
    assert table in page


def test_the_env_file_supplies_settings_and_the_environment_wins(tmp_path):
    env_file = tmp_path / "jobs.env"
    env_file.write_text('JOBS_MAX_WORKERS=7\nJOBS_LOG_LEVEL=DEBUG\nSENTRY_DSN="https://key@sentry.example/3"\n')
    from configuration.env_file import with_env_file

    settings = load_settings(with_env_file({"JOBS_ENV_FILE": str(env_file), "JOBS_LOG_LEVEL": "WARNING"}))
    assert settings.max_workers == 7
    assert settings.log_level == "WARNING"
    assert settings.sentry_dsn == "https://key@sentry.example/3"


def test_an_env_file_that_cannot_be_read_is_refused_naming_the_variable(tmp_path):
    with pytest.raises(SettingError, match=r"JOBS_ENV_FILE='.*missing.env' is not valid: a readable file"):
        from configuration.env_file import with_env_file

        load_settings(with_env_file({"JOBS_ENV_FILE": str(tmp_path / "missing.env")}))


def test_the_env_file_reaches_the_jobs_environment(tmp_path):
    from configuration.env_file import apply_env_file

    env_file = tmp_path / "jobs.env"
    env_file.write_text("PARTNER_TOKEN=s3cret\nHOME=/not/this\n")
    environ = {"JOBS_ENV_FILE": str(env_file), "HOME": "/root"}
    apply_env_file(environ)
    assert environ == {"JOBS_ENV_FILE": str(env_file), "HOME": "/root", "PARTNER_TOKEN": "s3cret"}


def test_a_log_file_in_a_directory_this_user_cannot_write_is_refused_naming_it() -> None:
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root, to ask as another user")
    reachable = Path(tempfile.mkdtemp(prefix="jobhost-settings-"))  # pytest's own are root's alone
    reachable.chmod(0o755)
    locked = reachable / "logs"
    locked.mkdir(mode=0o755)  # root's: another user may read it, not write it
    as_nobody = (
        "import os, sys; from configuration.settings import load_settings; os.setgid(65534); os.setuid(65534); "
        "load_settings({'JOBS_LOG_FILE': sys.argv[1]})"
    )
    done = subprocess.run(
        [sys.executable, "-c", as_nobody, str(locked / "jobs.log")], capture_output=True, text=True, cwd=ROOT
    )
    shutil.rmtree(reachable)
    assert (
        f"JOBS_LOG_FILE='{locked / 'jobs.log'}' is not valid: its directory {locked} cannot be written by user nobody"
        in done.stderr
    )


def test_named_tokens_are_read_as_name_token_pairs() -> None:
    settings = load_settings({"JOBS_HTTP_TOKENS": "alice=0123456789abcdef01, deploy-bot=0123456789abcdef02"})
    assert settings.http_tokens == (("alice", "0123456789abcdef01"), ("deploy-bot", "0123456789abcdef02"))
