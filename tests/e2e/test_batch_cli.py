"""`offload batch new` and `offload batch validate`, as users run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def offload(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run an offload command in `cwd`, with a terminal-free environment."""
    return subprocess.run(
        [sys.executable, "-m", "offload", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_new_spec_is_valid_and_is_not_overwritten(tmp_path: Path) -> None:
    made = offload("batch", "new", "-f", "fix.yaml", "--name", "fix-spelling", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "name: fix-spelling" in (tmp_path / "fix.yaml").read_text()
    checked = offload("batch", "validate", "-f", "fix.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "fix.yaml: batch spec 'fix-spelling' is valid (1 repository selector(s), 1 step(s))" in (
        checked.stdout
    )
    again = offload("batch", "new", "-f", "fix.yaml", cwd=tmp_path)
    assert again.returncode == 1 and "fix.yaml exists" in again.stderr


def test_every_problem_is_one_line_with_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "name: fix spelling\n"
        "on:\n"
        "  - repository: acme/api\n"
        "steps:\n"
        "  - run: echo ${{ jion repository.name }}\n"
        "    contaner: busybox\n"
    )
    checked = offload("batch", "validate", "-f", "bad.yaml", cwd=tmp_path)
    assert checked.returncode == 1
    lines = checked.stderr.strip().splitlines()
    assert lines[-1].endswith(f"bad.yaml: {len(lines) - 1} problems")
    problems = "\n".join(lines[:-1])
    assert "bad.yaml:1:7: name:" in problems
    assert "bad.yaml:6:5: steps[0]" in problems and "contaner" in problems
    assert "bad.yaml:5:" in problems and "jion" in problems
    assert "changesetTemplate is required" in problems


def test_a_spec_on_standard_input_and_a_missing_file(tmp_path: Path) -> None:
    piped = offload("batch", "validate", "-f", "-", cwd=tmp_path, stdin="name: [\n")
    assert piped.returncode == 1 and piped.stderr.startswith("<stdin>:")
    missing = offload("batch", "validate", "-f", "nowhere.yaml", cwd=tmp_path)
    assert missing.returncode == 2
    assert "cannot read nowhere.yaml: No such file or directory" in missing.stderr
