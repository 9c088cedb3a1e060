"""What the SQL stores share: every query of the StateStore interface, written once.

By protocol: the seam a backend fills in and the reading of rows (sql_base.py);
History, JobState, Heartbeats and RunLineStore (sql_history.py); Claims, which
fence writes over those, and the store's upkeep (here). SQLite and PostgreSQL
differ in nothing but the seam.

How the schema changes, so that a rollback keeps working: a release refuses a
store whose SCHEMA_VERSION is newer than its own, so the version is raised only for
a change the release before cannot live with. A change it can ignore keeps the
version: a new table, or a new column with a default (every query names its
columns, so an older release neither reads nor fills it). Each backend adds what
is missing when it opens a store of its own version, marks the rows recorded before
the change as the older releases read them, and makes the store itself complete
what an older release still writes (a trigger), so rows written during a rollback
or a rolling upgrade read right to both releases. What an older release reads
keeps being written too: a paused skip still has the reason "paused", the one
thing releases before `runs.paused` know it by.
"""

from __future__ import annotations

import contextlib
import datetime as dt

from jobhost.outcomes import RunStatus
from jobhost.store.model import LEASE_EXPIRED, RunRecord, Settlement, SlotState, StateDump, TakenOver
from jobhost.store.rows import Unreadable, slot_of, status_of
from jobhost.store.sql_base import COLUMNS, SETTLES
from jobhost.store.sql_history import SQLHistory


class SQLStore(SQLHistory):
    """The queries; subclasses provide the connection and the few things that differ."""

    # -- Claims --------------------------------------------------------------

    def claim(
        self, job: str, slot: dt.datetime, attempt: int, run_id: str, host: str, lease: float | None
    ) -> int | None:
        lease_sql = "NULL" if lease is None else f"{self._now()} + ?"
        row = self._one(
            self._q(
                "INSERT INTO {t}claims (job, slot, slot_epoch, attempt, run_id, host, token, lease_until) "
                f"VALUES (?, ?, ?, ?, ?, ?, {self._new_token()}, {lease_sql}) "
                "ON CONFLICT (job, slot_epoch, attempt) DO NOTHING RETURNING token"
            ),
            (job, slot.isoformat(), slot.timestamp(), attempt, run_id, host) + (() if lease is None else (lease,)),
        )
        return None if row is None else row[0]

    def claim_and_record(self, record: RunRecord) -> bool:
        with self._transaction():
            if self.claim(record.job, record.slot, record.attempt, record.run_id, record.host, None) is None:
                return False
            self.add_run(record)
        return True

    def _release(self, token: int) -> bool:
        """Settle a held claim; False if `token` no longer holds it."""
        return (
            self._do(
                self._q("UPDATE {t}claims SET lease_until = NULL WHERE token = ? AND lease_until IS NOT NULL"), (token,)
            )
            == 1
        )

    def start_run(self, record: RunRecord, token: int | None) -> bool:
        if token is None:
            self.add_run(record)
            return True
        with self._transaction():
            held = self._do(
                self._q("UPDATE {t}claims SET run_id = ? WHERE token = ? AND lease_until IS NOT NULL"),
                (record.run_id, token),
            )
            if held != 1:
                return False
            self.add_run(record)
        return True

    def settle(self, settlement: Settlement, token: int | None) -> bool:
        s = settlement
        with self._transaction():
            if token is not None and not self._release(token):
                return False
            self.finish_run(s.run_id, s.status, s.reason, s.ended, s.duration_ms)
            self._do(
                self._q("DELETE FROM {t}retries WHERE job = ? AND slot_epoch = ? AND attempt <= ?"),
                (s.job, s.slot.timestamp(), s.attempt),
            )
            if s.retry is not None:
                self.add_retry(s.retry)
        return True

    def record_unstarted(self, record: RunRecord, token: int) -> bool:
        with self._transaction():
            if not self._release(token):
                return False
            self.add_run(record)
        return True

    def withdraw(self, run_id: str, token: int | None) -> bool:
        with self._transaction():
            if token is not None:  # the claim is let go at once: another host (or the next start) takes it over
                expired = self._do(
                    self._q(
                        f"UPDATE {{t}}claims SET lease_until = {self._now()} - 1 "
                        "WHERE token = ? AND run_id = ? AND lease_until IS NOT NULL"
                    ),
                    (token, run_id),
                )
                if expired != 1:
                    return False
            self._do(self._q("DELETE FROM {t}runs WHERE run_id = ? AND status = 'running'"), (run_id,))
        return True

    def renew(self, tokens: list[int], lease: float) -> set[int]:
        if not tokens:
            return set()
        marks = ", ".join("?" * len(tokens))
        rows = self._all(
            self._q(
                f"UPDATE {{t}}claims SET lease_until = {self._now()} + ? "
                f"WHERE token IN ({marks}) AND lease_until IS NOT NULL RETURNING token"
            ),
            (lease, *tokens),
        )
        return {row[0] for row in rows}

    def take_over(
        self, host: str, jobs: list[str], lease: float, now: dt.datetime, *, own: bool = False
    ) -> list[TakenOver]:
        if not jobs:
            return []
        marks = ", ".join("?" * len(jobs))
        which = "host = ?" if own else f"lease_until < {self._now()}"
        taken = []
        with self._transaction():
            rows = self._all(
                self._q(
                    "SELECT job, slot, attempt, run_id, host, token FROM {t}claims "
                    f"WHERE lease_until IS NOT NULL AND {which} AND job IN ({marks}) "
                    f"ORDER BY lease_until LIMIT 100{self._skip_locked}"
                ),
                ((host,) if own else ()) + tuple(jobs),
            )
            for job, slot, attempt, run_id, previous, token in rows:
                run = self._one(self._q("SELECT status, ended FROM {t}runs WHERE run_id = ?"), (run_id,))
                try:
                    slot_at = slot_of(slot)
                    status = None if run is None else status_of(run[0])
                except Unreadable as exc:
                    self._set_aside.report("claim", f"{job}@{slot} attempt {attempt}", job, str(exc))
                    continue
                if status == RunStatus.RUNNING and own:
                    continue  # its process is still alive (recovery left it): not ours to take
                if status not in (None, RunStatus.RUNNING, RunStatus.WAITING):
                    self._release(token)  # already recorded as ended; only the release was lost
                    continue
                row = self._one(
                    self._q(
                        f"UPDATE {{t}}claims SET host = ?, token = {self._new_token()}, "
                        f"lease_until = {self._now()} + ? WHERE token = ? RETURNING token"
                    ),
                    (host, lease, token),
                )
                reason = LEASE_EXPIRED.format(previous=previous, taker=host)
                if status == RunStatus.RUNNING:
                    self.finish_run(run_id, RunStatus.ABANDONED, reason, now, None)
                elif status == RunStatus.WAITING:  # closed if still open; the slot is looked at anew
                    self._do(
                        self._q("UPDATE {t}runs SET reason = ?, ended = ? WHERE run_id = ? AND ended IS NULL"),
                        (reason, self._time(now), run_id),
                    )
                abandoned = status == RunStatus.RUNNING
                taken.append(TakenOver(job, slot_at, attempt, run_id, previous, row[0], abandoned))  # type: ignore[index]
        return taken

    def slot_state(self, job: str, slot: dt.datetime) -> SlotState:
        epoch = slot.timestamp()
        row = self._one(
            self._q(
                "SELECT (SELECT MAX(attempt) FROM {t}claims WHERE job = ? AND slot_epoch = ?), "
                "(SELECT MAX(attempt) FROM {t}runs WHERE job = ? AND slot_epoch = ?), "
                "EXISTS (SELECT 1 FROM {t}claims WHERE job = ? AND slot_epoch = ? AND lease_until IS NOT NULL), "
                f"EXISTS (SELECT 1 FROM {{t}}runs WHERE job = ? AND slot_epoch = ? AND {SETTLES})"
            ),
            (job, epoch) * 4,
        )
        claimed, recorded, held, settled = row  # type: ignore[misc]
        return SlotState(max(claimed or 0, recorded or 0), bool(held), bool(settled))

    def database_time(self) -> dt.datetime:
        row = self._one(f"SELECT {self._now()}")
        return dt.datetime.fromtimestamp(row[0], dt.UTC)  # type: ignore[index]

    # -- upkeep --------------------------------------------------------------

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        return self._transaction()

    def probe(self) -> None:
        with self._transaction():  # changed and changed back: a page is written (an equal value is not)
            for _ in range(2):
                self._do(self._q("UPDATE {t}schema_version SET version = -version"))

    def dump(self) -> StateDump:
        """Everything a move to another store needs: runs in the order recorded, pending retries,
        paused jobs."""
        rows = self._all(self._q(f"SELECT {COLUMNS} FROM {{t}}runs ORDER BY seq"))
        return StateDump(self._records(rows), self.pending_retries(), self.paused_jobs())

    def load(self, dump: StateDump) -> None:
        """Add a dump's contents (to an empty store), all or nothing: a load that fails part way
        leaves the store as empty as it was, so it can simply be run again."""
        with self._transaction():
            for record in dump.runs:
                self.add_run(record)
            for retry in dump.retries:
                self.add_retry(retry)
            for job in dump.paused:
                self.set_paused(job, True)
