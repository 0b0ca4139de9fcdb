"""The cold archive's layout: object keys, Parquet files, checksums and the day manifest.

```
<prefix>bars/date=YYYY-MM-DD/bars-YYYY-MM-DD.parquet      1-minute bars (BARS_SCHEMA), zstd
<prefix>trades/date=YYYY-MM-DD/trades-YYYY-MM-DD.parquet  captured trades (TRADES_SCHEMA), zstd
<prefix>manifests/date=YYYY-MM-DD.json                    written last: the day is complete
```

The manifest lists each file with its rows, bytes, SHA-256 of the whole file, and the S3
composite checksum (SHA-256 of the parts' SHA-256s, as S3 reports for multipart uploads).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from scanner.storage import StorageError

MANIFEST_VERSION = 1
PART_SIZE = 8 << 20  # multipart chunk; S3 wants >= 5 MiB for every part but the last


def iso_day(day: int) -> str:
    """20240315 -> '2024-03-15'."""
    if not 19000101 <= day <= 99991231:
        raise StorageError(f"'day' must be yyyymmdd, was {day}")
    return f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d}"


def parse_day(text: str) -> int:
    """'2024-03-15' or '20240315' -> 20240315."""
    digits = text.replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        raise StorageError(f"date must be YYYY-MM-DD, was {text!r}")
    day = int(digits)
    try:
        date(day // 10000, day // 100 % 100, day % 100)
    except ValueError as exc:
        raise StorageError(f"date must be YYYY-MM-DD, was {text!r} ({exc})") from None
    return day


def data_key(prefix: str, table: str, day: int) -> str:
    d = iso_day(day)
    return f"{prefix}{table}/date={d}/{table}-{d}.parquet"


def manifest_key(prefix: str, day: int) -> str:
    return f"{prefix}manifests/date={iso_day(day)}.json"


def write_parquet(table: pa.Table, path: Path) -> int:
    """zstd Parquet, row groups of 1M rows; returns the file size."""
    pq.write_table(table, path, compression="zstd", row_group_size=1 << 20)
    return path.stat().st_size


def file_checksums(path: Path, part_size: int = PART_SIZE) -> dict[str, Any]:
    """SHA-256 of the file, of each part (base64, as S3 wants them) and the composite."""
    whole = hashlib.sha256()
    parts: list[bytes] = []
    with open(path, "rb") as f:
        while chunk := f.read(part_size):
            whole.update(chunk)
            parts.append(hashlib.sha256(chunk).digest())
    if not parts:
        parts.append(hashlib.sha256(b"").digest())
    return {
        "sha256": whole.hexdigest(),
        "parts_b64": [base64.b64encode(p).decode() for p in parts],
        "composite_b64": base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode(),
    }


def same_composite(reported: str, expected_b64: str) -> bool:
    """S3 reports a multipart checksum as `<b64>-<parts>`; some servers omit the suffix."""
    return reported.split("-", 1)[0] == expected_b64


def build_manifest(day: int, files: list[dict[str, Any]], *, source: str, instance: str) -> bytes:
    return json.dumps({
        "version": MANIFEST_VERSION, "date": iso_day(day), "trading_day": day, "source": source,
        "instance": instance, "created_ns": time.time_ns(), "files": files,
    }, indent=1).encode()


def parse_manifest(raw: bytes) -> dict[str, Any]:
    m = json.loads(raw)
    if m.get("version") != MANIFEST_VERSION:
        raise StorageError(f"archive manifest version {m.get('version')} is not {MANIFEST_VERSION}")
    return m
