"""The metrics that read history: what they ask the store, and what they show when it fails."""

from __future__ import annotations

import datetime as dt

from jobhost.errors import StoreUnavailable
from jobhost.observe.metrics import LastSuccess
from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord

T0 = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)


class _History:
    """Each job's newest succeeded run ended at T0 + its number of minutes; counts the questions."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.down = False

    def runs(self, job: str, limit: int, status: RunStatus) -> list[RunRecord]:
        if self.down:
            raise StoreUnavailable("the database is down")
        self.asked.append(job)
        minutes = int(job.removeprefix("job_"))
        ended = T0 + dt.timedelta(minutes=minutes)
        return [] if minutes % 2 else [RunRecord("r", job, T0, 1, status, ended=ended)]


def _shown(collector: LastSuccess) -> dict[str, float]:
    [family] = list(collector.collect())
    return {sample.labels["job"]: sample.value for sample in family.samples}


def test_last_success_reads_a_bounded_number_of_jobs_a_scrape_and_the_ones_seen_first() -> None:
    clock = [0.0]
    history = _History()
    collector = LastSuccess(monotonic=lambda: clock[0])
    collector.jobs = [f"job_{n}" for n in range(1200)]
    collector.store = lambda: history  # type: ignore[assignment,return-value]
    collector.REREAD_MAX = 500

    assert len(_shown(collector)) == 250 and len(history.asked) == 500  # the odd ones never succeeded
    _shown(collector)
    _shown(collector)
    assert len(history.asked) == 1200  # each job once, over three scrapes
    history.asked.clear()
    collector.seen("job_4")
    assert _shown(collector)["job_4"] == (T0 + dt.timedelta(minutes=4)).timestamp()
    assert history.asked == ["job_4"]  # nothing else is due yet

    clock[0] = 61.0  # a minute on: the jobs that succeeded are read again, the others not yet
    history.asked.clear()
    for _ in range(2):
        _shown(collector)
    assert len(history.asked) == 600 and all(int(j[4:]) % 2 == 0 for j in history.asked)


def test_last_success_keeps_its_values_while_the_store_is_down() -> None:
    history = _History()
    collector = LastSuccess(monotonic=lambda: 0.0)
    collector.jobs = ["job_2", "job_4"]
    collector.store = lambda: history  # type: ignore[assignment,return-value]
    before = _shown(collector)
    history.down = True
    collector.seen("job_2")
    assert _shown(collector) == before
    history.down = False
    history.asked.clear()
    _shown(collector)
    assert history.asked == ["job_2"]  # the success seen during the outage is read once it is back
