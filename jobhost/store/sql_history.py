"""What the SQL stores record and read back: the History, JobState, Heartbeats, RunLineStore and AuditTrail
queries.

Written once for both backends over the seam in sql_base.py; the claims built on
them are in sql.py.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from jobhost.outcomes import RunStatus
from jobhost.store.model import (
    EVERY_JOB,
    Action,
    CancelRequest,
    Heartbeat,
    Hold,
    OneOff,
    Pause,
    PendingRetry,
    RunRecord,
)
from jobhost.store.rows import Unreadable, params_of, slot_of, status_of
from jobhost.store.sql_base import COLUMNS, OPEN, READABLE, SETTLED_SQL, SETTLES, SQLBase


class SQLHistory(SQLBase):
    """Runs as recorded, each job's state, heartbeats and kept run lines."""

    # -- History -------------------------------------------------------------

    def add_run(self, record: RunRecord) -> None:
        seq = self._next_seq()
        self._do(
            self._q(
                f"INSERT INTO {{t}}runs ({COLUMNS}, slot_epoch{', seq' if seq else ''}) "
                f"VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?{', ' + seq if seq else ''})"
            ),
            (
                record.run_id,
                record.job,
                record.slot.isoformat(),
                record.attempt,
                str(record.status),
                record.reason,
                self._time(record.started),
                self._time(record.ended),
                record.duration_ms,
                record.host,
                record.pid,
                record.paused,
                None if record.params is None else json.dumps(record.params, ensure_ascii=False),
                record.requested_by,
                record.one_off,
                record.slot.timestamp(),
            ),
        )

    def set_pid(self, run_id: str, pid: int) -> None:
        self._do(self._q("UPDATE {t}runs SET pid = ? WHERE run_id = ?"), (pid, run_id))

    def finish_run(
        self, run_id: str, status: RunStatus, reason: str, ended: dt.datetime, duration_ms: int | None
    ) -> None:
        self._do(
            self._q("UPDATE {t}runs SET status = ?, reason = ?, ended = ?, duration_ms = ? WHERE run_id = ?"),
            (str(status), reason, self._time(ended), duration_ms, run_id),
        )

    def finish_left_run(self, run_id: str, status: RunStatus, reason: str, ended: dt.datetime) -> bool:
        changed = self._do(
            self._q("UPDATE {t}runs SET status = ?, reason = ?, ended = ? WHERE run_id = ? AND status = 'running'"),
            (str(status), reason, self._time(ended), run_id),
        )
        return changed == 1

    def runs(self, job: str | None = None, limit: int = 20, status: RunStatus | None = None) -> list[RunRecord]:
        where, params = [], []
        if job is not None:
            where.append("job = ?")
            params.append(job)
        if status is not None:
            where.append("status = ?")
            params.append(str(status))
        condition = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self._all(
            self._q(f"SELECT {COLUMNS} FROM {{t}}runs {condition}ORDER BY seq DESC LIMIT ?"), (*params, limit)
        )
        return self._records(rows)

    def run(self, run_id: str) -> RunRecord | None:
        row = self._one(self._q(f"SELECT {COLUMNS} FROM {{t}}runs WHERE run_id = ?"), (run_id,))
        return None if row is None else self._record(row)

    def running(self, host: str) -> list[RunRecord]:
        rows = self._all(self._q(f"SELECT {COLUMNS} FROM {{t}}runs WHERE {OPEN} AND host = ? ORDER BY seq"), (host,))
        return self._records(rows)

    def running_runs(self, job: str) -> list[RunRecord]:
        rows = self._all(
            self._q(f"SELECT {COLUMNS} FROM {{t}}runs WHERE job = ? AND status = 'running' ORDER BY seq"), (job,)
        )
        return self._records(rows)

    def last_statuses(self) -> dict[str, RunStatus]:
        rows = self._all(
            self._q(
                f"SELECT job, status FROM {{t}}runs WHERE seq IN "
                f"(SELECT MAX(seq) FROM {{t}}runs WHERE {READABLE} GROUP BY job)"
            )
        )
        return {job: RunStatus(status) for job, status in rows}

    def succeeded_slots(self, job: str, start: dt.datetime, end: dt.datetime) -> set[float]:
        rows = self._all(
            self._q(
                "SELECT DISTINCT slot_epoch FROM {t}runs WHERE job = ? AND status = 'succeeded' "
                "AND slot_epoch BETWEEN ? AND ?"
            ),
            (job, start.timestamp(), end.timestamp()),
        )
        return {row[0] for row in rows}

    def unsettled_slots(self, job: str, since: dt.datetime, before: dt.datetime) -> list[dt.datetime]:
        return self._unsettled(job, since.timestamp(), before.timestamp())

    def blocked_slots(self, job: str, since: dt.datetime) -> list[dt.datetime]:
        # Blocked: a closed waiting record whose reason says so (Dependencies words it "blocked: ...").
        blocked = "status = 'waiting' AND ended IS NOT NULL AND substr(reason, 1, 8) = 'blocked:'"
        return self._unsettled(
            job, since.timestamp(), float("inf"), f"AND SUM(CASE WHEN {blocked} THEN 1 ELSE 0 END) > 0 "
        )

    def _unsettled(self, job: str, since: float, before: float, having: str = "") -> list[dt.datetime]:
        rows = self._all(
            self._q(
                f"SELECT MIN(slot), slot_epoch FROM {{t}}runs WHERE job = ? AND {READABLE} AND NOT one_off "
                "AND slot_epoch >= ? AND slot_epoch < ? "
                "AND slot_epoch NOT IN (SELECT slot_epoch FROM {t}claims WHERE job = ? AND lease_until IS NOT NULL) "
                "GROUP BY slot_epoch "
                f"HAVING SUM(CASE WHEN {SETTLES} THEN 1 ELSE 0 END) = 0 "
                f"AND SUM(CASE WHEN {OPEN} THEN 1 ELSE 0 END) = 0 {having}"
                "ORDER BY slot_epoch"
            ),
            (job, since, before, job),
        )
        slots = []
        for slot, _ in rows:
            try:
                slots.append(slot_of(slot))
            except Unreadable as exc:
                self._set_aside.report("slot", str(slot), job, str(exc))
        return slots

    def final_status(self, job: str, slot: dt.datetime) -> RunStatus | None:
        row = self._one(
            self._q(
                f"SELECT status FROM {{t}}runs WHERE job = ? AND slot_epoch = ? AND {SETTLES} ORDER BY seq DESC LIMIT 1"
            ),
            (job, slot.timestamp()),
        )
        return None if row is None else RunStatus(row[0])

    def settled_slots(self) -> dict[str, dt.datetime]:
        rows = self._all(
            self._q(
                f"SELECT job, MAX(CASE WHEN {SETTLES} THEN slot_epoch END), "
                f"MIN(slot_epoch) FROM {{t}}runs WHERE {READABLE} AND NOT one_off GROUP BY job"
            )
        )
        bases = {}
        for job, newest_settled, oldest in rows:
            # A job with runs but none settled (its first run was interrupted) starts before its oldest.
            epoch = newest_settled if newest_settled is not None else oldest - 1e-6
            bases[job] = dt.datetime.fromtimestamp(epoch, dt.UTC)
        return bases

    def prune(self, before: dt.datetime, limit: int) -> int:
        self.prune_lines(before, limit)  # the status page's lines go no later than the runs
        self._do(  # and the audit trail keeps as long as the history it explains
            self._q("DELETE FROM {t}audit WHERE seq IN (SELECT seq FROM {t}audit WHERE at < ? ORDER BY seq LIMIT ?)"),
            (self._utc(before), limit),
        )
        self._do(  # one-off runs taken or cancelled long ago: their runs' records tell the rest
            self._q(
                "DELETE FROM {t}one_offs WHERE run_id IN (SELECT run_id FROM {t}one_offs "
                "WHERE state != 'pending' AND asked_at < ? LIMIT ?)"
            ),
            (self._utc(before), limit),
        )
        self._do(  # a request no host acted on (its run had ended) goes with the rest
            self._q(
                "DELETE FROM {t}cancels WHERE run_id IN (SELECT run_id FROM {t}cancels WHERE asked_at < ? LIMIT ?)"
            ),
            (self._utc(before), limit),
        )
        # By when the run was recorded, not by its slot: a backfill of last year is recent history.
        return self._do(
            self._q(
                "DELETE FROM {t}runs WHERE seq IN ("
                "  SELECT seq FROM {t}runs WHERE COALESCE(ended, started) < ? AND status != 'running'"
                "  AND seq NOT IN (SELECT MAX(seq) FROM {t}runs GROUP BY job)"
                f"  AND seq NOT IN (SELECT MAX(seq) FROM {{t}}runs WHERE status IN ({SETTLED_SQL}) GROUP BY job)"
                "  ORDER BY seq LIMIT ?)"
            ),
            (self._utc(before), limit),
        )

    def report_unreadable(self, limit: int = 100) -> int:
        rows = self._all(
            self._q(f"SELECT run_id, job, slot, status FROM {{t}}runs WHERE NOT {READABLE} ORDER BY seq LIMIT ?"),
            (limit,),
        )
        for run_id, job, slot, status in rows:
            try:
                status_of(status)
                slot_of(slot)
                problem = f"slot {slot!r} and its epoch disagree"
            except Unreadable as exc:
                problem = str(exc)
            self._set_aside.report("run", run_id, job, problem)
        return len(rows)

    # -- JobState ------------------------------------------------------------

    def set_paused(self, job: str, paused: bool, pause: Pause | None = None) -> None:
        resumed = 0 if paused else 1  # counted, so a pause and resume between two looks is still seen
        pause = (pause or Pause()) if paused else Pause()
        self._do(
            self._q(
                "INSERT INTO {t}job_state (job, paused, resumes, reason, paused_by, paused_at, paused_until) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (job) DO UPDATE SET paused = excluded.paused, "
                "resumes = {t}job_state.resumes + excluded.resumes, reason = excluded.reason, "
                "paused_by = excluded.paused_by, paused_at = excluded.paused_at, paused_until = excluded.paused_until"
            ),
            (job, paused, resumed, pause.reason, pause.by, self._utc(pause.since), self._utc(pause.until)),
        )

    def paused_jobs(self) -> set[str]:
        return {row[0] for row in self._all(self._q("SELECT job FROM {t}job_state WHERE paused"))}

    def pauses(self) -> dict[str, Pause]:
        rows = self._all(
            self._q("SELECT job, reason, paused_by, paused_at, paused_until FROM {t}job_state WHERE paused")
        )
        found = {}
        for job, reason, by, since, until in rows:
            try:
                found[job] = Pause(
                    reason, by, self._stored_time("paused_at", since), self._stored_time("paused_until", until)
                )
            except Unreadable as exc:  # still paused: only the details are unknown
                self._set_aside.report("pause", job, job, str(exc))
                found[job] = Pause(reason, by)
        return found

    def end_pauses(self, now: dt.datetime) -> list[str]:
        ended = "paused AND paused_until IS NOT NULL AND paused_until <= ?"
        # A read first, outside any transaction: the usual answer, none, takes no write lock (the
        # heartbeat asks every few seconds, and SQLite has one writer).
        reasons = dict(self._all(self._q(f"SELECT job, reason FROM {{t}}job_state WHERE {ended}"), (self._utc(now),)))
        if not reasons:
            return []
        with self._transaction():
            rows = self._all(  # the update checks again: of hosts looking at once, one resumes each job
                self._q(
                    "UPDATE {t}job_state SET paused = ?, resumes = resumes + 1, reason = '', paused_by = '', "
                    f"paused_at = NULL, paused_until = NULL WHERE {ended} RETURNING job"
                ),
                (False, self._utc(now)),
            )
            resumed = sorted(row[0] for row in rows)
            for job in resumed:
                reason = reasons.get(job)
                what = "freeze" if job == EVERY_JOB else "pause"
                why = f"the {what} ended as set ({reason})" if reason else f"the {what} ended as set"
                self.add_action(Action(now, "jobhost", "thaw" if job == EVERY_JOB else "resume", job, why))
        return resumed

    def resumes(self) -> dict[str, int]:
        rows = self._all(self._q("SELECT job, resumes FROM {t}job_state WHERE NOT paused"))
        return dict(rows)

    def add_retry(self, retry: PendingRetry) -> None:
        self._do(
            self._q(
                "INSERT INTO {t}retries (job, slot, slot_epoch, attempt, due) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (job, slot_epoch) DO UPDATE SET attempt = excluded.attempt, due = excluded.due"
            ),
            (retry.job, retry.slot.isoformat(), retry.slot.timestamp(), retry.attempt, self._time(retry.due)),
        )

    def drop_retry(self, job: str, slot: dt.datetime) -> None:
        self._do(self._q("DELETE FROM {t}retries WHERE job = ? AND slot_epoch = ?"), (job, slot.timestamp()))

    def pending_retries(self) -> list[PendingRetry]:
        rows = self._all(self._q("SELECT job, slot, attempt, due FROM {t}retries ORDER BY due"))
        retries = []
        for job, slot, attempt, due in rows:
            try:
                retries.append(PendingRetry(self._stored_time("due", due), job, slot_of(slot), attempt))  # type: ignore[arg-type]
            except Unreadable as exc:
                self._set_aside.report("pending retry", f"{job}@{slot}", job, str(exc))
        return retries

    # -- Heartbeats ----------------------------------------------------------

    def beat(self, host: str, pid: int, at: dt.datetime, *, stopped: bool = False) -> None:
        self._do(
            self._q(
                "INSERT INTO {t}heartbeats (host, pid, beat_at, stopped) VALUES (?, ?, ?, ?) ON CONFLICT (host) "
                "DO UPDATE SET pid = excluded.pid, beat_at = excluded.beat_at, stopped = excluded.stopped"
            ),
            (host, pid, self._time(at), stopped),
        )

    def heartbeat(self, host: str) -> Heartbeat | None:
        row = self._one(self._q("SELECT pid, beat_at, stopped FROM {t}heartbeats WHERE host = ?"), (host,))
        if row is None:
            return None
        return Heartbeat(host, row[0], self._from_db(row[1]), bool(row[2]))  # type: ignore[arg-type]

    # -- RunLineStore --------------------------------------------------------

    def keep_lines(self, run_id: str, job: str, at: dt.datetime, lines: list[dict[str, Any]], dropped: int) -> None:
        self._do(
            self._q(
                "INSERT INTO {t}run_lines (run_id, job, kept_at, dropped, lines) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET kept_at = excluded.kept_at, dropped = excluded.dropped, "
                "lines = excluded.lines"
            ),
            (run_id, job, self._utc(at), dropped, json.dumps(lines, ensure_ascii=False)),
        )

    def prune_lines(self, before: dt.datetime, limit: int) -> int:
        return self._do(
            self._q(
                "DELETE FROM {t}run_lines WHERE run_id IN "
                "(SELECT run_id FROM {t}run_lines WHERE kept_at < ? ORDER BY kept_at LIMIT ?)"
            ),
            (self._utc(before), limit),
        )

    def kept_lines(self, run_id: str) -> tuple[list[dict[str, Any]], int] | None:
        row = self._one(self._q("SELECT lines, dropped FROM {t}run_lines WHERE run_id = ?"), (run_id,))
        return None if row is None else (json.loads(row[0]), row[1])

    # -- AuditTrail ----------------------------------------------------------

    def add_action(self, action: Action) -> None:
        self._do(
            self._q("INSERT INTO {t}audit (at, actor, action, target, reason, detail) VALUES (?, ?, ?, ?, ?, ?)"),
            (
                self._utc(action.at),
                action.actor,
                action.action,
                action.target,
                action.reason,
                json.dumps(action.detail, ensure_ascii=False, default=str),
            ),
        )

    def actions(self, since: dt.datetime | None = None, limit: int = 100) -> list[Action]:
        where, params = ("WHERE at >= ? ", (self._utc(since),)) if since is not None else ("", ())
        rows = self._all(
            self._q(
                f"SELECT at, actor, action, target, reason, detail FROM {{t}}audit {where}ORDER BY seq DESC LIMIT ?"
            ),
            (*params, limit),
        )
        found = []
        for at, actor, action, target, reason, detail in rows:
            try:
                when = self._stored_time("at", at)
                kept = json.loads(detail)
            except (Unreadable, ValueError) as exc:
                self._set_aside.report("audit record", f"{action} {target} at {at}", target, str(exc))
                continue
            found.append(Action(when, actor, action, target, reason, kept if isinstance(kept, dict) else {}))  # type: ignore[arg-type]
        return found

    # -- CancelRequests ------------------------------------------------------

    def ask_cancel(self, request: CancelRequest) -> CancelRequest:
        self._do(
            self._q(
                "INSERT INTO {t}cancels (run_id, job, asked_by, asked_at, reason) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO NOTHING"
            ),
            (request.run_id, request.job, request.asked_by, self._utc(request.asked_at), request.reason),
        )
        row = self._one(
            self._q("SELECT run_id, job, asked_by, asked_at, reason FROM {t}cancels WHERE run_id = ?"),
            (request.run_id,),
        )
        return self._cancel_request(row) if row is not None else request

    def cancel_requests(self) -> list[CancelRequest]:
        rows = self._all(
            self._q(
                "SELECT run_id, job, asked_by, asked_at, reason FROM {t}cancels WHERE done_at IS NULL ORDER BY asked_at"
            )
        )
        return [self._cancel_request(row) for row in rows]

    def cancels_done(self, run_ids: list[str], at: dt.datetime) -> None:
        for run_id in run_ids:
            self._do(self._q("UPDATE {t}cancels SET done_at = ? WHERE run_id = ?"), (self._utc(at), run_id))

    def _cancel_request(self, row: tuple[Any, ...]) -> CancelRequest:
        run_id, job, by, at, reason = row
        try:
            when = self._stored_time("asked_at", at)
        except Unreadable:
            when = None
        # Still a request if its time cannot be read: only the time is unknown then.
        return CancelRequest(run_id, job, by, when or dt.datetime.fromtimestamp(0, dt.UTC), reason)

    # -- OneOffRuns ----------------------------------------------------------

    _ONE_OFF = "run_id, job, slot, requested_by, asked_at, params, state"

    def add_one_off(self, one_off: OneOff) -> None:
        self._do(
            self._q(
                "INSERT INTO {t}one_offs (run_id, job, slot, slot_epoch, params, requested_by, asked_at, state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                one_off.run_id,
                one_off.job,
                one_off.at.isoformat(),
                one_off.at.timestamp(),
                None if one_off.params is None else json.dumps(one_off.params, ensure_ascii=False),
                one_off.requested_by,
                self._utc(one_off.asked_at),
                one_off.state,
            ),
        )

    def pending_one_offs(self) -> list[OneOff]:
        rows = self._all(
            self._q(f"SELECT {self._ONE_OFF} FROM {{t}}one_offs WHERE state = 'pending' ORDER BY slot_epoch")
        )
        return [one for one in map(self._one_off, rows) if one is not None]

    def one_off(self, run_id: str) -> OneOff | None:
        row = self._one(self._q(f"SELECT {self._ONE_OFF} FROM {{t}}one_offs WHERE run_id = ?"), (run_id,))
        return None if row is None else self._one_off(row)

    def take_one_off(self, run_id: str) -> bool:
        return self._changed_one_off(run_id, "taken")

    def cancel_one_off(self, run_id: str) -> bool:
        return self._changed_one_off(run_id, "cancelled")

    def _changed_one_off(self, run_id: str, state: str) -> bool:
        """Move a pending one-off run to `state`: the UPDATE checks, so of hosts trying at once one does."""
        rows = self._all(
            self._q("UPDATE {t}one_offs SET state = ? WHERE run_id = ? AND state = 'pending' RETURNING run_id"),
            (state, run_id),
        )
        return bool(rows)

    def _one_off(self, row: tuple[Any, ...]) -> OneOff | None:
        run_id, job, slot, by, asked_at, params, state = row
        try:
            asked = self._stored_time("asked_at", asked_at)
            if asked is None:
                raise Unreadable("asked_at is missing")
            return OneOff(run_id, job, slot_of(slot), by, asked, params_of(params), state)
        except Unreadable as exc:
            self._set_aside.report("one-off run", run_id, job, str(exc))
            return None

    # -- CatchUpHolds --------------------------------------------------------

    def hold_catchup(self, hold: Hold) -> None:
        self._do(
            self._q(
                "INSERT INTO {t}catchup_holds (job, held_by, held_at) VALUES (?, ?, ?) "
                "ON CONFLICT (job) DO UPDATE SET held_by = excluded.held_by, held_at = excluded.held_at"
            ),
            (hold.job, hold.by, self._utc(hold.at)),
        )

    def catchup_holds(self) -> dict[str, Hold]:
        found = {}
        for job, by, at in self._all(self._q("SELECT job, held_by, held_at FROM {t}catchup_holds")):
            try:
                when = self._stored_time("held_at", at)
            except Unreadable as exc:
                self._set_aside.report("catch-up hold", job, job, str(exc))
                continue
            if when is not None:
                found[job] = Hold(job, by, when)
        return found

    def drop_catchup_holds(self, jobs: list[str]) -> None:
        for job in jobs:
            self._do(self._q("DELETE FROM {t}catchup_holds WHERE job = ?"), (job,))
