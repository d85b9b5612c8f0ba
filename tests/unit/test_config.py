"""Settings read from the environment."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from offload.config import Settings, default_data_dir


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
