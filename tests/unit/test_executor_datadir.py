"""Which executor data directory `offload executor images` means, and how it is named."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from offload.executor.datadir import data_dir_flag, find, is_default, up_executor_dir


def test_the_flag_wins_then_executor_data_dir_then_offload_up_of_offload_data_dir() -> None:
    env = {"EXECUTOR_DATA_DIR": "/srv/executor", "OFFLOAD_DATA_DIR": "/srv/offload"}

    assert find(env, Path("/given")).path == Path("/given")
    assert find(env).path == Path("/srv/executor")
    assert find(env).why == "from EXECUTOR_DATA_DIR"
    up = find({"OFFLOAD_DATA_DIR": "/srv/offload"})
    assert up.path == up_executor_dir(Path("/srv/offload")) == Path("/srv/offload/executor")
    assert up.images == Path("/srv/offload/executor/images")
    assert up.why == "the executor of `offload up` with OFFLOAD_DATA_DIR=/srv/offload"
    # Blank is unset, as for every executor setting.
    assert find({"EXECUTOR_DATA_DIR": "  ", "OFFLOAD_DATA_DIR": "/srv/offload"}) == up


def test_the_default_is_what_a_shell_without_data_dir_variables_finds() -> None:
    bare = find({}).path
    named = {"EXECUTOR_DATA_DIR": "/srv/executor", "OFFLOAD_DATA_DIR": "/srv/offload"}

    assert is_default(bare, named)
    assert not is_default(Path("/srv/executor"), named)
    assert not is_default(Path("/srv/offload/executor"), {"OFFLOAD_DATA_DIR": "/srv/offload"})


def test_the_flag_is_absolute_and_survives_a_shell(tmp_path: Path) -> None:
    assert data_dir_flag(None) == ""
    spaced = tmp_path / "data dir" / "executor"
    flag = data_dir_flag(spaced)
    assert shlex.split(flag) == ["--data-dir", str(spaced)]
    assert shlex.split(data_dir_flag(Path("relative"))) == [
        "--data-dir",
        os.path.join(os.getcwd(), "relative"),
    ]
