"""The role's contract: every variable in defaults/ is described in meta/argument_specs.yml
with the same default, and every variable is the role's own (prefixed)."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT

ROLE = ROOT / "ansible" / "roles" / "jobhost"


def test_argument_specs_describe_exactly_the_defaults_with_the_same_values():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    options = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert sorted(options) == sorted(defaults), "meta/argument_specs.yml does not match defaults/main.yml"
    for name, spec in options.items():
        assert spec["default"] == defaults[name], name
        assert spec.get("description") and spec.get("type"), name


def test_every_variable_is_prefixed_with_the_role_name():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    constants = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    assert all(name.startswith("jobhost_") for name in defaults)
    assert all(name.startswith("_jobhost_") for name in constants)
