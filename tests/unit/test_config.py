"""Settings read from the environment."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from offload.config import Settings, default_data_dir
from offload.executor.config import ConfigError, ExecutorConfig, unknown_settings


def test_durations_accept_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_LOGS_RETENTION", "3d")
    monkeypatch.setenv("OFFLOAD_STOP_TIMEOUT", "250ms")
    monkeypatch.setenv("OFFLOAD_RESETTER_INTERVAL", "90")
    settings = Settings()
    assert settings.logs_retention == timedelta(days=3)
    assert settings.stop_timeout == timedelta(milliseconds=250)
    assert settings.resetter_interval == timedelta(seconds=90)


def test_bad_duration_says_how_to_write_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_STOP_TIMEOUT", "soon")
    with pytest.raises(ValidationError, match=r"write e\.g\. 30s, 5m, 2h or 7d"):
        Settings()


def test_default_database_is_sqlite_in_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OFFLOAD_DATABASE_URL", raising=False)
    monkeypatch.setenv("OFFLOAD_DATA_DIR", str(tmp_path))
    url = Settings().database()
    assert url.dialect == "sqlite" and url.path == tmp_path / "offload.db"


def test_checkout_uses_its_own_data_dir() -> None:
    root = Path(__file__).resolve().parents[2]
    assert default_data_dir() == root / ".offload"


# --- the executor's settings -----------------------------------------------------------------

EXECUTOR = {
    "EXECUTOR_FRONTEND_URL": "http://offload:8080",
    "EXECUTOR_REGISTRATION_TOKEN": "token",
    "EXECUTOR_QUEUE_NAME": "default",
}


def _executor_problems(**settings: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        ExecutorConfig.from_env({**EXECUTOR, **settings})
    return [line.removeprefix("  - ") for line in str(raised.value).splitlines()[1:]]


def test_executor_defaults_are_valid_and_each_start_gets_its_own_run() -> None:
    one, two = (ExecutorConfig.from_env({**EXECUTOR, "EXECUTOR_NAME": "exec-a"}) for _ in "12")
    assert (one.max_jobs, one.heartbeat_interval, one.poll_wait) == (1, 5.0, 10.0)
    assert (one.job_memory, one.job_pids, one.keep_workspaces) == (2 * 1024**3, 1024, False)
    assert one.run_id.startswith("exec-a-") and one.run_id != two.run_id


def test_executor_settings_at_the_edges_of_their_ranges_are_accepted() -> None:
    config = ExecutorConfig.from_env(
        {
            **EXECUTOR,
            "EXECUTOR_MAXIMUM_NUM_JOBS": " 256 ",
            "EXECUTOR_HEARTBEAT_INTERVAL": "100ms",
            "EXECUTOR_QUEUE_POLL_WAIT": "0",
            "EXECUTOR_MAXIMUM_RUNTIME_PER_JOB": "7d",
            "EXECUTOR_JOB_NUM_CPUS": "0.01",
            "EXECUTOR_JOB_MEMORY": "64MiB",
            "EXECUTOR_JOB_PIDS": "16",
            "EXECUTOR_JOB_DISK": "1.5Gi",
            "EXECUTOR_JOB_OUTPUT_LIMIT": "1kb",
            "EXECUTOR_KEEP_WORKSPACES": "YES",
            "EXECUTOR_NAME": "a" * 255,
            "EXECUTOR_FRONTEND_URL": "https://offload.example.com:8443/prefix/",
        }
    )
    assert (config.max_jobs, config.heartbeat_interval, config.poll_wait) == (256, 0.1, 0.0)
    assert (config.max_runtime, config.job_cpus, config.job_memory) == (604800, 0.01, 64 << 20)
    assert (config.job_pids, config.job_disk, config.job_output) == (16, 1536 << 20, 1024)
    assert config.keep_workspaces is True
    assert config.frontend_url == "https://offload.example.com:8443/prefix"


def test_every_bad_executor_setting_is_named_with_its_value_and_what_is_valid() -> None:
    problems = _executor_problems(
        EXECUTOR_MAX_NUM_JOBS="257",
        EXECUTOR_HEARTBEAT_INTERVAL="11s",
        EXECUTOR_QUEUE_POLL_WAIT="1e3",
        EXECUTOR_JOB_NUM_CPUS="inf",
        EXECUTOR_JOB_MEMORY="63M",
        EXECUTOR_JOB_TMP_SIZE="1e9",
        EXECUTOR_JOB_PIDS="16.5",
        EXECUTOR_KEEP_WORKSPACES="maybe",
        EXECUTOR_NAME="two words",
        EXECUTOR_BACKEND="firecracker",
        EXECUTOR_JOB_USER="0:0",
    )
    assert problems == [
        "EXECUTOR_BACKEND='firecracker' is not a runtime; valid runtimes are: docker, sandbox, "
        "shell",
        "EXECUTOR_MAX_NUM_JOBS='257' is not valid: write a whole number from 1 to 256",
        "EXECUTOR_HEARTBEAT_INTERVAL='11s' is out of range: write a duration from 100ms to 10s, "
        "e.g. 5s (units: ms, s, m, h, d)",
        "EXECUTOR_QUEUE_POLL_WAIT='1e3' is not a duration: write one from 0s to 1m, e.g. 10s "
        "(units: ms, s, m, h, d)",
        problems[4],  # the machine's CPU count is in it
        problems[5],  # and its memory
        "EXECUTOR_JOB_PIDS='16.5' is not valid: write a whole number from 16 to 4194304",
        problems[7],
        "EXECUTOR_KEEP_WORKSPACES='maybe' is not valid: write true or false",
        "EXECUTOR_JOB_USER='0:0' must be uid[:gid], whole numbers from 1 to 4294967294 (steps "
        "never run as host root), e.g. 100000:100000",
        "EXECUTOR_NAME='two words' is not valid: write 1 to 255 printable ASCII characters "
        "without spaces (it is sent in headers and heartbeats), e.g. build-7",
    ]
    assert problems[4].startswith("EXECUTOR_JOB_NUM_CPUS='inf' is not valid: write a number")
    assert problems[5].startswith("EXECUTOR_JOB_MEMORY='63M' is out of range: write a size")
    assert problems[7].startswith("EXECUTOR_JOB_TMP_SIZE='1e9' is not a size")


def test_executor_urls_queues_and_aliases_are_checked_without_echoing_secrets() -> None:
    problems = _executor_problems(
        EXECUTOR_FRONTEND_URL="http://admin:hunter2@offload:8080",
        EXECUTOR_FRONTEND_PASSWORD="other-token",
        EXECUTOR_QUEUE_NAME="Batches",
    )
    assert "hunter2" not in "".join(problems) and "other-token" not in "".join(problems)
    assert problems[0].startswith("EXECUTOR_FRONTEND_URL='http://***@offload:8080' carries")
    assert problems[1] == (
        "EXECUTOR_REGISTRATION_TOKEN and EXECUTOR_FRONTEND_PASSWORD are both set, to different "
        "values; set only EXECUTOR_REGISTRATION_TOKEN"
    )
    assert problems[2].startswith("EXECUTOR_QUEUE_NAME='Batches' is not valid: queue name")
    assert _executor_problems(EXECUTOR_FRONTEND_URL="http://offload:99999")[0].startswith(
        "EXECUTOR_FRONTEND_URL='http://offload:99999' has a bad host or port"
    )
    assert _executor_problems(EXECUTOR_QUEUE_NAME="a,b")[0].startswith(
        "EXECUTOR_QUEUE_NAME='a,b' names several queues"
    )


def test_unknown_executor_variables_are_named_with_the_closest_setting() -> None:
    env = {**EXECUTOR, "EXECUTOR_QUEUE_NAMS": "x", "EXECUTOR_COLOR": "blue", "OTHER": "1"}
    assert unknown_settings(env) == [
        "EXECUTOR_COLOR is not an executor setting, so it has no effect",
        "EXECUTOR_QUEUE_NAMS is not an executor setting, so it has no effect; did you mean "
        "EXECUTOR_QUEUE_NAMES?",
    ]
