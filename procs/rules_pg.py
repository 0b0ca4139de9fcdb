"""The rule store in PostgreSQL (table `rules`, ordered by `position`), for hosts that share
one rule set. Same semantics as the JSON store (`scanner.rules.store.RuleStore`: add replaces
in place, remove, replace_all, on_change after commit); writers serialise on an advisory
transaction lock, and every write bumps `rules_version` so that each host's supervisor can
notice a change made elsewhere (`RulesVersionWatcher`)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import psycopg
from psycopg.types.json import Jsonb

from scanner.rules.store import RuleList, RuleStore, RuleStoreError, default_pack, load_items, parse_stored

log = logging.getLogger("scanner.rules")
LOCK_KEY = 724_601  # advisory lock id of the rule store


class PgRuleStore(RuleStore):
    def __init__(self, url: str, on_change: Callable[[RuleList], None] | None = None) -> None:
        super().__init__("rules@postgres", on_change)
        self.url = url
        self._conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, connect_timeout=5)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            self._conn = conn
            try:
                yield
            finally:
                self._conn = None

    def read(self) -> tuple[RuleList, list[str]]:
        """Rows validated one by one (the body as text, parsed per row, so that one row the
        JSON parser or the model refuses is skipped and reported instead of failing the read)."""
        def fetch(conn: psycopg.Connection) -> list[tuple[str, str]]:
            return conn.execute("SELECT id, body::text FROM rules ORDER BY position, id").fetchall()

        if self._conn is not None:
            rows = fetch(self._conn)
        else:
            with self._connect() as conn:
                rows = fetch(conn)
        items: list[object] = []
        unreadable: list[str] = []
        for rid, body in rows:
            try:
                items.extend(load_items(f"[{body}]"))
            except RuleStoreError as exc:
                unreadable.append(f"row id {rid[:64]!r}: {exc}")
        rules, problems = parse_stored(items)
        return rules, unreadable + problems

    def _write(self, rules: RuleList) -> None:
        assert self._conn is not None, "_write outside _locked"
        cur = self._conn.cursor()
        cur.execute("DELETE FROM rules")
        cur.executemany("INSERT INTO rules (id, name, body, position) VALUES (%s, %s, %s, %s)",
                        [(r.id, r.name or r.id, Jsonb(r.dump()), i) for i, r in enumerate(rules)])
        cur.execute("UPDATE rules_version SET version = version + 1, initialized = true WHERE id = 1")

    def version(self) -> int:
        with self._connect() as conn:
            row = conn.execute("SELECT version FROM rules_version WHERE id = 1").fetchone()
            return int(row[0]) if row else 0

    def install_defaults(self) -> bool:
        """First use of this database: store the default pack; True if written."""
        with self._locked():
            assert self._conn is not None
            row = self._conn.execute("SELECT initialized FROM rules_version WHERE id = 1").fetchone()
            if row and row[0]:
                return False
            self._write(default_pack())
        return True


class RulesVersionWatcher(threading.Thread):
    """Polls `rules_version` every `interval` s and calls `on_change()` when it moved: a rule
    change made through another host reaches this host's workers. Runs beside the
    supervisor's loop, never in it; a database outage only delays the notice."""

    def __init__(self, store: PgRuleStore, on_change: Callable[[], None], interval: float = 1.0) -> None:
        super().__init__(name="rules-version", daemon=True)
        self.store, self.on_change, self.interval = store, on_change, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        seen: int | None = None
        failing = False
        while not self.stopped.wait(self.interval):
            try:
                v = self.store.version()
            except psycopg.Error as exc:
                if not failing:
                    log.warning("rule version check failed (%s); retrying", exc)
                failing = True
                continue
            failing = False
            if seen is not None and v != seen:
                self.on_change()
            seen = v
