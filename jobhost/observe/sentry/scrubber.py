"""What never leaves the host for Sentry: secrets in a failing job's locals and breadcrumbs.

The SDK's own scrubber replaces a value only when its name is one of a list,
exactly (`password`, not `db_password`), and never looks inside values. A
job's locals hold connection strings and tokens under names of every kind, so
this one replaces the value of any name that *contains* one of `SECRET_WORDS`,
at any depth, and the password of any URL (`scheme://user:password@host`) in
any string: frame locals, breadcrumbs (message and data), `extra`, the
exception's message and the run's context.
"""

from __future__ import annotations

import re
from typing import Any

from sentry_sdk.scrubber import EventScrubber
from sentry_sdk.utils import AnnotatedValue, capture_internal_exceptions

SECRET_WORDS = ("token", "secret", "password", "passwd", "key", "dsn", "auth", "credential")
FILTERED = "[Filtered]"
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]*:)[^\s/@'\"]+@", re.IGNORECASE)


def secret_name(name: str) -> bool:
    """True for a name that says its value is a secret (`DB_PASSWORD`, `apiKey`, `auth_header`)."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def without_url_passwords(text: str) -> str:
    """`text` with the password of each URL in it replaced: `postgresql://app:[Filtered]@db/x`."""
    return _URL_PASSWORD.sub(rf"\1{FILTERED}@", text)


class SecretScrubber(EventScrubber):
    """The SDK's scrubber (the same places, and its list of names), matching names by what they
    contain and looking into every value."""

    def __init__(self) -> None:
        super().__init__(recursive=True)

    def scrub_dict(self, d: object) -> None:
        if not isinstance(d, dict):
            return
        for key, value in d.items():
            if isinstance(key, str) and (secret_name(key) or key.lower() in self.denylist):
                d[key] = AnnotatedValue.substituted_because_contains_sensitive_data()
            else:
                d[key] = self._scrub_value(value)

    def scrub_list(self, lst: object) -> None:
        if isinstance(lst, list):
            lst[:] = [self._scrub_value(value) for value in lst]

    def scrub_breadcrumbs(self, event: Any) -> None:
        super().scrub_breadcrumbs(event)
        with capture_internal_exceptions():
            crumbs = event.get("breadcrumbs")
            for crumb in crumbs.get("values") or [] if isinstance(crumbs, dict) else []:
                if isinstance(crumb.get("message"), str):
                    crumb["message"] = without_url_passwords(crumb["message"])

    def scrub_event(self, event: Any) -> None:
        super().scrub_event(event)
        with capture_internal_exceptions():
            for value in (event.get("exception") or {}).get("values") or []:
                if isinstance(value.get("value"), str):
                    value["value"] = without_url_passwords(value["value"])
            if isinstance(event.get("message"), str):
                event["message"] = without_url_passwords(event["message"])
            for context in (event.get("contexts") or {}).values():  # the run's `reason`
                for key, value in context.items() if isinstance(context, dict) else ():
                    if isinstance(value, str):
                        context[key] = without_url_passwords(value)
            logentry = event.get("logentry")
            if isinstance(logentry, dict) and isinstance(logentry.get("message"), str):
                logentry["message"] = without_url_passwords(logentry["message"])

    def _scrub_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return without_url_passwords(value)
        self.scrub_dict(value)
        self.scrub_list(value)
        return value
