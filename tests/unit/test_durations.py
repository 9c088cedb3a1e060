"""Durations as people write them, and as log lines show them."""

from __future__ import annotations

import pytest

from jobhost.definition.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (2.5, 2.5),
        ("30s", 30.0),
        ("45m", 2700.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        (" 2M ", 120.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("1d2h3m4s", 93784.0),
    ],
)
def test_parse_duration_accepts(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("5 minutez", ["'5 minutez' is not a duration", "write seconds (90) or '30s', '45m', '2h', '1h30m', '1d'"]),
        ("", ["is not a duration"]),
        ("h", ["is not a duration"]),
        ("-5s", ["is not a duration"]),
        ("1h30", ["is not a duration"]),
        (None, ["None is not a duration"]),
        ([30], ["is not a duration"]),
        (True, ["must be seconds or a string like '30s'"]),
        (0, ["must be more than zero, not 0"]),
        (-3, ["must be more than zero, not -3"]),
        ("0s", ["must be more than zero, not '0s'"]),
    ],
)
def test_parse_duration_refuses(value, words):
    with pytest.raises(ValueError) as info:
        parse_duration(value, what="timeout")
    assert str(info.value).startswith("timeout ")
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "0.5s"),
        (1.25, "1.25s"),
        (45, "45s"),
        (60, "1m"),
        (90, "1m30s"),
        (720, "12m"),
        (3600, "1h"),
        (5400, "1h30m"),
        (7200, "2h"),
        (86400, "1d"),
        (90061, "1d1h1m1s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["45s", "12m", "2h", "1h30m", "1d1h1m1s", "0.5s"])
def test_format_duration_reads_back(text):
    assert format_duration(parse_duration(text)) == text
