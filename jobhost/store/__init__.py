"""Open the state store a URL names: ``sqlite:///relative/path``, ``sqlite:////absolute/path``
or ``postgresql://user:password@host:port/database``."""

from __future__ import annotations

from pathlib import Path

from jobhost.errors import StoreError
from jobhost.store.model import Heartbeat, RunRecord
from jobhost.store.protocols import StateStore
from jobhost.store.sqlite import SQLiteStore

__all__ = ["Heartbeat", "RunRecord", "StateStore", "open_store", "sqlite_path"]


def sqlite_path(url: str, base_dir: Path) -> Path | None:
    """The SQLite file `url` names (a relative path is under `base_dir`); None for another store."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return path if path.is_absolute() else base_dir / path


def open_store(url: str, base_dir: Path) -> StateStore:
    """Open (and create or migrate) the store at `url`; relative paths are under `base_dir`."""
    path = sqlite_path(url, base_dir)
    if path is not None:
        if url == "sqlite:///":
            raise StoreError("the SQLite URL names no file: write sqlite:///var/jobhost.sqlite3")
        return SQLiteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from jobhost.store.postgres import PostgresStore  # only hosts on PostgreSQL load psycopg

        return PostgresStore(url)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise StoreError(
        f"unknown state store {scheme!r}: use sqlite:///path/to/file.sqlite3 or postgresql://user@host/database"
    )
