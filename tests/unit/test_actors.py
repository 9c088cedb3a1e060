"""The actor a command's action is recorded under."""

from __future__ import annotations

import os
import pwd

import pytest

from jobhost.actors import command_line_actor


def test_a_command_acts_as_the_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert command_line_actor() == pwd.getpwuid(os.geteuid()).pw_name


def test_through_sudo_the_person_who_typed_it_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    assert command_line_actor() == f"{pwd.getpwuid(os.geteuid()).pw_name} (sudo by alice)"
