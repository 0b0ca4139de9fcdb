"""The migration files: discovery, flavour selection, statement splitting (no database here).

Files live in `migrations/<engine>/NNNN_name[.flavour].sql`. `NNNN` is the version, applied in
order and recorded once in the engine's `schema_migrations` table. A version may come in
flavours (`.native` / `.timescale` for PostgreSQL): one is chosen when the first flavoured
migration is applied and recorded, so later versions follow the same path. A file whose first
line is `-- migrate: no-transaction` runs statement by statement outside a transaction
(TimescaleDB continuous aggregates refuse to be created inside one).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from scanner.storage import StorageError

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)(?:\.([a-z]+))?\.sql$")
NO_TRANSACTION = "-- migrate: no-transaction"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    flavor: str | None
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION)


def discover(engine: str, root: Path = MIGRATIONS_DIR) -> dict[int, list[Migration]]:
    """version -> its files (one plain, or one per flavour)."""
    folder = root / engine
    if not folder.is_dir():
        raise StorageError(f"migrations folder {folder} is missing")
    out: dict[int, list[Migration]] = {}
    for path in sorted(folder.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise StorageError(f"migration file {path.name} is not named NNNN_name[.flavour].sql")
        mig = Migration(int(m.group(1)), m.group(2), m.group(3), path.read_text())
        out.setdefault(mig.version, []).append(mig)
    return dict(sorted(out.items()))


def pick(files: list[Migration], flavor: str) -> Migration:
    """The file of one version for `flavor` (a plain file serves every flavour)."""
    for f in files:
        if f.flavor in (None, flavor):
            return f
    raise StorageError(f"migration {files[0].version:04d} has no {flavor!r} variant")


def plan(available: dict[int, list[Migration]], applied: set[int], flavor: str) -> list[Migration]:
    """Migrations still to apply, in version order."""
    return [pick(files, flavor) for v, files in available.items() if v not in applied]


def split_statements(sql: str) -> list[str]:
    """Split a script on `;` at line ends, keeping `$$ ... $$` bodies whole; comments dropped."""
    out, cur, in_body = [], [], False
    for line in sql.splitlines():
        if not in_body and line.strip().startswith("--"):
            continue
        cur.append(line)
        if line.count("$$") % 2:
            in_body = not in_body
        if not in_body and line.rstrip().endswith(";"):
            stmt = "\n".join(cur).strip().rstrip(";").strip()
            if stmt:
                out.append(stmt)
            cur = []
    rest = "\n".join(cur).strip()
    if rest:
        out.append(rest)
    return out
