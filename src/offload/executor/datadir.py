"""Which executor data directory a command means, so `offload executor images` and the
executor that runs the jobs agree on one image store.

`offload up` runs its executor with `<offload data dir>/executor`; a stand-alone executor uses
EXECUTOR_DATA_DIR or its default. A command without --data-dir takes the first of:
EXECUTOR_DATA_DIR; the executor of `offload up` with this OFFLOAD_DATA_DIR; the executor of
`offload up` with offload's default data directory, once `offload up` has run there; the
executor's own default.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# The variables that name a data directory: a data dir found without them is "the default".
NAMING_VARIABLES = ("EXECUTOR_DATA_DIR", "OFFLOAD_DATA_DIR")


def up_executor_dir(offload_data_dir: Path) -> Path:
    """The data directory of the executor `offload up` runs with this offload data directory."""
    return offload_data_dir / "executor"


def default_data_dir() -> Path:
    """Where a stand-alone executor keeps its data: /var/lib when root, else the user's."""
    if os.geteuid() == 0:
        return Path("/var/lib/offload-executor")
    return Path.home() / ".local" / "share" / "offload-executor"


@dataclass(frozen=True)
class DataDir:
    """An executor data directory and why it is the one meant, for messages."""

    path: Path
    why: str

    @property
    def images(self) -> Path:
        """Its image store."""
        return self.path / "images"


def find(env: Mapping[str, str], given: Path | None = None) -> DataDir:
    """The data directory `given` (--data-dir), else the one `env` and this machine imply."""
    if given is not None:
        return DataDir(given, "given by --data-dir")
    if value := env.get("EXECUTOR_DATA_DIR", "").strip():
        return DataDir(Path(value), "from EXECUTOR_DATA_DIR")
    if value := env.get("OFFLOAD_DATA_DIR", "").strip():
        return DataDir(
            up_executor_dir(Path(value)),
            f"the executor of `offload up` with OFFLOAD_DATA_DIR={value}",
        )
    from offload.config import default_data_dir as offload_data_dir

    up = offload_data_dir()
    # An SQLite database or an executor directory: `offload up` has run with this data dir.
    if (up / "offload.db").exists() or up_executor_dir(up).is_dir():
        return DataDir(up_executor_dir(up), f"the executor of `offload up` with data in {up}")
    return DataDir(default_data_dir(), "the executor's default")


def is_default(data_dir: Path, env: Mapping[str, str]) -> bool:
    """Whether a command run without --data-dir and without the variables that name a data
    directory finds `data_dir`."""
    bare = {key: value for key, value in env.items() if key not in NAMING_VARIABLES}
    return _same(find(bare).path, data_dir)


def data_dir_flag(data_dir: Path | None) -> str:
    """` --data-dir DIR` (shell-quoted) when a command must name `data_dir`, else ""."""
    return "" if data_dir is None else f" --data-dir {shlex.quote(os.path.abspath(data_dir))}"


def _same(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()
