"""Where an instance lives: its name rule, its defaults and the files of its data directory.

`scanner.config.Settings` builds on these; they stay here, free of pydantic, so that the CLI can
tell that an instance is stopped without loading the settings class (`cli.common.quick_paths`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INSTANCE_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
DEFAULT_INSTANCE = "default"
DEFAULT_DATA_DIR = Path("var")
RULES_FILE = "rules.json"


@dataclass(frozen=True)
class InstancePaths:
    """The files of instance `instance` under `data_dir`."""

    instance: str
    data_dir: Path

    def run_dir(self) -> Path:
        return Path(self.data_dir).resolve()

    def pidfile(self) -> Path:
        return self.run_dir() / f"{self.instance}.pid"

    def logfile(self) -> Path:
        return self.run_dir() / f"{self.instance}.log"

    def checkpoint_file(self) -> Path:
        return self.run_dir() / f"{self.instance}.checkpoint.npz"

    def rules_file(self) -> Path:
        return self.run_dir() / RULES_FILE
