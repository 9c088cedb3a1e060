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
