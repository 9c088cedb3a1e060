"""A run's parameters: checked against the job's signature, converted to each annotated type, and
kept as JSON from which the same values are made again."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from pathlib import Path

import pytest

from jobhost.definition.parameters import parameters, parse_pairs, run_arguments, stored


def export(
    slot,
    day: dt.date = dt.date(2026, 1, 1),
    at: dt.datetime | None = None,
    limit: int = 100,
    ratio: float = 0.5,
    dry_run: bool = False,
    amount: decimal.Decimal = decimal.Decimal("0"),
    target: Path = Path("/tmp/out"),
    label: str = "daily",
    note=None,
    tags: list[str] = [],  # noqa: B006 - a default the scheduled run uses; no value can be given by hand
):
    pass


def test_each_type_is_made_from_text_and_from_json():
    text = {
        "day": "2026-11-30",
        "at": "2026-11-30T06:00+01:00",
        "limit": " 42 ",
        "ratio": "0.25",
        "dry_run": "yes",
        "amount": "12.50",
        "target": "/srv/exports",
        "label": "weekly",
        "note": "by hand",
    }
    made = run_arguments(export, text)
    assert made == {
        "day": dt.date(2026, 11, 30),
        "at": dt.datetime(2026, 11, 30, 6, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        "limit": 42,
        "ratio": 0.25,
        "dry_run": True,
        "amount": decimal.Decimal("12.50"),
        "target": Path("/srv/exports"),
        "label": "weekly",
        "note": "by hand",
    }
    kept = stored(made)
    assert run_arguments(export, kept) == made  # the stored form makes the same values again
    as_json = {"limit": 7, "ratio": 1, "dry_run": False, "at": None, "amount": "3.10"}
    assert run_arguments(export, as_json) == {
        "limit": 7,
        "ratio": 1.0,
        "dry_run": False,
        "at": None,
        "amount": decimal.Decimal("3.10"),
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"limit": "ten"}, "limit: 'ten' is not a whole number"),
        ({"limit": True}, "limit: true is not a whole number"),
        ({"limit": "١٢٣"}, "limit: '١٢٣' is not a whole number"),
        ({"limit": "1_000"}, "limit: '1_000' is not a whole number"),
        ({"ratio": "nan"}, "ratio: 'nan' is not a finite number"),
        ({"ratio": "1e400"}, "ratio: '1e400' is not a finite number"),
        ({"ratio": "inf"}, "ratio: 'inf' is not a finite number"),
        ({"target": "/tmp/\0x"}, "target: '/tmp/\\x00x' is not a path"),
        ({"day": "2026-13-01"}, "day: '2026-13-01' is not a date, ISO 8601"),
        ({"dry_run": "maybe"}, "dry_run: 'maybe' is not true or false"),
        ({"amount": "NaN"}, "amount: 'NaN' is not a decimal number"),
        ({"amount": 0.1}, "amount: 0.1 is not a decimal number"),  # a JSON float has lost digits already
        ({"label": 5}, "label: 5 is not text"),
        ({"limit": None}, "limit: null is not an int (this parameter takes no none)"),
        ({"limit": [1]}, "limit: [1] is not one int, not a list"),
        ({"colour": "red"}, "colour: the job takes no such parameter; its parameters: day, at, limit"),
        ({"slot": "2026-01-01"}, "slot: the host gives it (the slot of the run: --slot)"),
        ({"data_dir": "/tmp"}, "data_dir: the host gives it (JOBS_DATA_DIR)"),
        ({"tags": "a,b"}, "tags: its type list[str] is not one a run's parameter is made as"),
    ],
)
def test_a_value_that_does_not_convert_is_refused_naming_the_parameter(given, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        run_arguments(export, given)


def test_the_host_given_parameters_are_not_a_persons_to_give():
    known, open_ended = parameters(export)
    assert "slot" not in known and not open_ended
    assert known["at"].optional and not known["limit"].optional
    assert [known[name].type_name for name in ("day", "at", "note")] == ["date", "datetime", "text"]


def test_a_job_taking_any_keyword_gets_unknown_names_as_given():
    def loose(limit: int = 1, **extra):
        pass

    assert run_arguments(loose, {"limit": "2", "region": "eu"}) == {"limit": 2, "region": "eu"}


@pytest.mark.parametrize(("pairs", "message"), [(["limit"], "'limit' is not key=value"), (["=1"], "not key=value")])
def test_a_pair_that_is_not_key_value_is_refused(pairs, message):
    with pytest.raises(ValueError, match=message):
        parse_pairs(pairs)


def test_pairs_keep_everything_after_the_first_equals_sign():
    assert parse_pairs(["query=a=b", "empty="]) == {"query": "a=b", "empty": ""}
    with pytest.raises(ValueError, match="'limit' is given twice"):
        parse_pairs(["limit=1", "limit=2"])
