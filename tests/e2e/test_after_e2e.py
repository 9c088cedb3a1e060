"""`after=` end to end: a child waits, is blocked by a failing parent, and runs once it succeeds."""

from __future__ import annotations

from tests.conftest import Deployment, events


def test_a_child_waits_is_blocked_by_a_failing_parent_and_runs_once_it_succeeds(deployment: Deployment, host) -> None:
    flag = deployment.tmp / "parent-may-succeed"
    deployment.write(
        "chain",
        f"""
        from pathlib import Path
        from jobhost import job, every

        @job(every(3).seconds)
        def parent():
            if not Path({str(flag)!r}).exists():
                raise RuntimeError("upstream not ready")

        @job(every(3).seconds, after="parent")
        def child():
            pass
        """,
    )
    process = host()
    records = process.wait_for(
        lambda rs: any(r.get("blocked") for r in events(rs, "child", "run_waiting")), what="a blocked child"
    )
    assert not events(records, "child", "run_started")
    flag.write_text("")
    records = process.wait_for(lambda rs: events(rs, "child", "run_succeeded"), what="the child to run")
    assert process.stop() == 0
    [ran] = events(records, "child", "run_succeeded")[:1]
    parent_ok = [r for r in deployment.history("parent") if r["status"] == "succeeded" and r["slot"] == ran["slot"]]
    assert parent_ok, "the child ran for a slot whose parent had not succeeded"
    blocked = [r for r in deployment.history("child") if r["reason"].startswith("blocked: parent failed")]
    assert blocked and all("upstream not ready" in r["reason"] for r in blocked)


def test_a_parent_slot_fixed_by_hand_releases_the_child_it_blocked_at_once(deployment: Deployment, host) -> None:
    deployment.write(
        "chain",
        """
        import os
        from jobhost import job, every

        @job(every(3).seconds)
        def parent():
            if "UPSTREAM_FIXED" not in os.environ:  # only the person's run by hand succeeds
                raise RuntimeError("upstream not ready")

        @job(every(3).seconds, after="parent")
        def child():
            pass
        """,
    )
    process = host(JOBS_HEARTBEAT_INTERVAL="1m")  # the loop's own look is a minute away: the nudge must do it
    records = process.wait_for(
        lambda rs: any(r.get("blocked") for r in events(rs, "child", "run_waiting")), what="a blocked child"
    )
    slot = next(r for r in events(records, "child", "run_waiting") if r.get("blocked"))["slot"]
    assert deployment.cli("run", "parent", "--slot", slot, UPSTREAM_FIXED="1").returncode == 0
    records = process.wait_for(
        lambda rs: any(r["slot"] == slot for r in events(rs, "child", "run_succeeded")),
        timeout=20,
        what="the blocked child to run now",
    )
    [unblocked] = events(records, "child", "run_unblocked")
    assert (unblocked["slot"], unblocked["attempt"]) == (slot, 2)
    assert process.stop() == 0
    runs = [(r["attempt"], r["status"]) for r in deployment.history("child") if r["slot"] == slot]
    assert sorted(runs) == [(1, "waiting"), (2, "succeeded")]
    assert all(r["status"] != "succeeded" for r in deployment.history("child") if r["slot"] != slot)
