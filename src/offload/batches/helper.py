"""The executor-side half of a batch step: the host tool `batch-helper pre|post STEP`.

It runs inside the executor's process (executor/hosttools.py). A workspace job runs, for
each spec step i, three steps on the executor: `pre i` (this module, on the host) evaluates
the step's `if` and renders its env, files and script; `run i` (the user's container, in the
runtime) runs the script; `post i` (this module, on the host) records the diff, the changed
files, stdout/stderr and the outputs, and writes the result as one `offload-step-result:`
log line that the server reads when the job completes.

Host-side code must not trust anything a step could have written. Steps run in the runtime
with the workspace mounted read-write and are dead before `pre`/`post` run, so:
- every path into the workspace is checked component by component for symlinks;
- git runs against a private copy of the checkout's git directory, made in the job's host
  directory before any step ran, so a step cannot plant config (hooks, fsmonitor, filters)
  that would run on the host.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import shlex
import shutil
import stat
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from offload.batches import diffs
from offload.batches.template.engine import TemplateError, evaluate_condition, render

BATCH_DIR = ".offload-batch"
INPUT = f"{BATCH_DIR}/input.json"
REPOSITORY = "repository"
RESULT_PREFIX = "offload-step-result: "
# What a result keeps of a step's stdout and stderr (the full streams are in the job's log).
STREAM_CAP = 64 * 1024
# The most of a step's output files a post step reads.
READ_CAP = 8 * 1024 * 1024


class HelperError(RuntimeError):
    """The step cannot go on; the message says why (it ends up in the job's log)."""


# -- safe paths into the workspace ---------------------------------------------------------


def safe_path(root: Path, relative: str) -> Path:
    """`root/relative`, refusing `..` and any existing component that is a symlink."""
    path = root
    for part in Path(relative).parts:
        if part in ("..", "/") or part.startswith("/"):
            raise HelperError(f"path {relative!r} leaves the workspace")
        path = path / part
        if path.is_symlink():
            raise HelperError(f"{relative!r} passes through a symlink at {path.relative_to(root)}")
    return path


def read_capped(path: Path, cap: int) -> bytes:
    """Up to `cap` bytes of a regular file, never following a symlink; b"" when missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise HelperError(f"cannot read {path.name}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HelperError(f"{path.name} is not a regular file")
        return file.read(cap)


def write_file(root: Path, relative: str, data: bytes, mode: int = 0o644) -> None:
    """Write `data` at `root/relative`, creating directories, never through a symlink.

    What it creates belongs to the workspace's owner (the uid steps run as), so that later
    steps can change it.
    """
    path = safe_path(root, relative)
    owner = os.stat(root)
    made = [d for d in (path.parent, *path.parent.parents) if root in d.parents and not d.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    safe_path(root, relative)  # the directories just made are real ones
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise HelperError(f"{relative!r} exists and is not a regular file")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as file:
        if (owner.st_uid, owner.st_gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, owner.st_uid, owner.st_gid)
            for directory in made:
                os.lchown(directory, owner.st_uid, owner.st_gid)
        file.write(data)


def give_tree(root: Path, top: Path) -> None:
    """Hand everything under `top` (in workspace `root`) that this process owns to the
    workspace's owner: git, run here as root, writes the files of an applied diff."""
    owner = os.stat(root)
    me = os.geteuid()
    if (owner.st_uid, owner.st_gid) == (me, os.getegid()):
        return
    for directory, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            if os.lstat(path).st_uid == me:
                os.lchown(path, owner.st_uid, owner.st_gid)


# -- git against the private copy ----------------------------------------------------------


_NOT_ADOPTED = {"objects", "hooks", "logs", "description", "branches"}


class Git:
    """git over the workspace's checkout, with the git directory kept in the host directory."""

    def __init__(self, workspace: Path, host: Path) -> None:
        self.work_tree = safe_path(workspace, REPOSITORY)
        self.git_dir = host / "git"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(host),
            "GIT_DIR": str(self.git_dir),
            "GIT_WORK_TREE": str(self.work_tree),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
        }

    def adopt(self) -> None:
        """Copy the checkout's git directory (not yet touched by any step) into the host dir."""
        source = self.work_tree / ".git"
        if source.is_symlink() or not source.is_dir():
            raise HelperError("the checkout has no .git directory")
        top = str(source)

        def ignore(directory: str, names: list[str]) -> set[str]:
            # Not the objects (taken below), the sample hooks (never run), nor reflogs and
            # templates (host-side git reads neither).
            return _NOT_ADOPTED & set(names) if directory == top else set()

        shutil.copytree(source, self.git_dir, ignore=ignore)
        # The copy owns its objects: no alternates into the workspace, where a step could
        # write an `objects/info/alternates` that sends the host's git anywhere.
        shutil.copytree(source / "objects", self.git_dir / "objects", copy_function=_keep)

    def __call__(self, *args: str, stdin: bytes | None = None) -> bytes:
        """Run one git command; HelperError with its stderr when it fails."""
        if self.work_tree.is_symlink() or not self.work_tree.is_dir():
            raise HelperError(f"{REPOSITORY}/ is no longer a directory")
        argv = ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", *args]
        done = subprocess.run(
            argv, input=stdin, capture_output=True, env=self.env, cwd=self.work_tree, check=False
        )
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()
            raise HelperError(f"git {args[0]} failed: {err}")
        return done.stdout

    def changes(self) -> tuple[bytes, dict[str, list[str]]]:
        """The diff of the work tree against the checked-out commit, and the changed files
        (read from the diff itself: one git process fewer per step)."""
        self("add", "--all")
        diff = self("diff", "--cached", "--no-prefix", "--binary", "--no-ext-diff", "--no-textconv")
        try:
            return diff, files_of(diffs.parse_diff(diff))
        except diffs.DiffError as exc:
            raise HelperError(f"git diff wrote what offload cannot read: {exc}") from exc

    def apply(self, diff: bytes) -> None:
        """Apply a cached diff to the work tree (the state after the cached steps)."""
        if diff:
            self("apply", "--binary", "-p0", "--whitespace=nowarn", "-", stdin=diff)
            give_tree(self.work_tree.parent, self.work_tree)


def _keep(source: str, dest: str) -> None:
    """Take one object file for the host's copy, so no step can change it afterwards."""
    if os.geteuid() == 0:
        # A root-owned, read-only hard link: steps (never root) can no longer write the
        # shared inode, and a big pack costs no copy.
        try:
            os.link(source, dest, follow_symlinks=False)
            os.chown(dest, 0, 0, follow_symlinks=False)
            os.chmod(dest, 0o444)
            return
        except OSError:
            pass
    shutil.copyfile(source, dest, follow_symlinks=False)


def files_of(sections: list[diffs.FileDiff]) -> dict[str, list[str]]:
    """modified/added/deleted/renamed paths of a diff, as `git diff --name-status` gives
    them (a path deleted and added again, a type change, counts as modified)."""
    out: dict[str, list[str]] = {"modified": [], "added": [], "deleted": [], "renamed": []}
    gone = {f.path for f in sections if f.status == "deleted"}
    made = {f.path for f in sections if f.status == "added"}
    for f in sections:
        kind = {"copied": "added", "mode": "modified"}.get(f.status, f.status)
        if f.path in gone and f.path in made:
            if f.status == "added":
                continue
            kind = "modified"
        out[kind].append(f.path)
    return out


# -- template data -------------------------------------------------------------------------


def step_data(
    spec_input: Mapping[str, Any], previous: Mapping[str, Any] | None, secrets: Mapping[str, str]
) -> dict[str, Any]:
    """What a step's templates see (Sourcegraph's step context)."""
    prev = previous or {}
    files = prev.get("changedFiles") or {}
    changed = {
        "modified_files": files.get("modified", []),
        "added_files": files.get("added", []),
        "deleted_files": files.get("deleted", []),
        "renamed_files": files.get("renamed", []),
    }
    repo = spec_input["repository"]
    return {
        "repository": {
            "name": repo["name"],
            "branch": repo.get("branch", ""),
            "search_result_paths": spec_input.get("searchResultPaths", []),
        },
        "batch_change": spec_input.get("batchChange", {}),
        "previous_step": {
            **changed,
            "stdout": prev.get("stdout", ""),
            "stderr": prev.get("stderr", ""),
        },
        "steps": {**changed, "path": spec_input.get("path", "")},
        "outputs": dict(prev.get("outputs") or {}),
        "secrets": dict(secrets),
    }


def _render(text: str, data: Mapping[str, Any], field: str) -> str:
    try:
        return render(text, data)
    except TemplateError as exc:
        raise HelperError(f"{field}: {exc}") from exc


# -- pre and post --------------------------------------------------------------------------


class Helper:
    """The pre and post halves of step `index` in one workspace."""

    def __init__(
        self,
        workspace: Path,
        host: Path,
        index: int,
        env: Mapping[str, str],
        write: Callable[[str], None],
    ) -> None:
        self.workspace = workspace
        self.host = host
        self.index = index
        self.write = write
        self.git = Git(workspace, host)
        trusted = host / "input.json"
        if not trusted.exists():
            # The first pre step runs before any untrusted step: the input is still the job's.
            shutil.copyfile(safe_path(workspace, INPUT), trusted)
        self.input: dict[str, Any] = json.loads(trusted.read_text())
        steps = self.input["steps"]
        if not 0 <= index < len(steps):
            raise HelperError(f"step {index} does not exist; the spec has {len(steps)} steps")
        self.step: dict[str, Any] = steps[index]
        names = self.input.get("secretNames", [])
        self.secrets = {n: env[n] for n in names if n in env}
        self.env = env

    def _result_path(self, index: int) -> Path:
        return self.host / f"step{index}.json"

    def previous(self) -> dict[str, Any] | None:
        """The result of the step before this one (run, skipped or cached)."""
        if self.index == 0:
            return None
        path = self._result_path(self.index - 1)
        if path.exists():
            result: dict[str, Any] = json.loads(path.read_text())
            return result
        cached = self.input.get("cachedResult")
        if cached is not None and int(cached["stepIndex"]) == self.index - 1:
            return dict(cached)
        raise HelperError(f"step {self.index - 1} left no result")

    def _batch(self, name: str) -> str:
        return f"{BATCH_DIR}/step{self.index}.{name}"

    def pre(self) -> None:
        """Decide whether the step runs, and write its script and files."""
        if not self.git.git_dir.exists():
            self.git.adopt()
            cached = self.input.get("cachedResult")
            if cached is not None:
                self.git.apply(decode_diff(cached))
                self.write(f"applied the cached result of steps 0..{cached['stepIndex']}")
        previous = self.previous()
        data = step_data(self.input, previous, self.secrets)
        condition = self.step.get("if")
        runs = (
            condition
            if isinstance(condition, bool)
            else condition is None or self._condition(str(condition), data)
        )
        skip = safe_path(self.workspace, self._batch("skip"))
        if not runs:
            write_file(self.workspace, self._batch("skip"), b"")
            self.write(f"step {self.index} is skipped: its if did not render to true")
            return
        if skip.exists():
            skip.unlink()
        # No #! line: the run step's wrapper runs it with $OFFLOAD_SHELL (run_commands).
        lines = [f"# step {self.index}: run with bash when the image has it, else sh"]
        for var in self.step.get("env", []):
            value = var.get("value")
            if value is None:
                value = self.env.get(var["name"], "")
            else:
                value = _render(value, data, f"steps[{self.index}].env.{var['name']}")
            lines.append(f"export {var['name']}={shlex.quote(value)}")
        self._write_mounts()
        for n, (target, content) in enumerate(sorted(self.step.get("files", {}).items())):
            body = _render(content, data, f"steps[{self.index}].files[{target}]")
            write_file(self.workspace, f"{BATCH_DIR}/files/{self.index}/{n}", body.encode())
        run = _render(self.step["run"], data, f"steps[{self.index}].run")
        lines.append(run)
        write_file(self.workspace, self._batch("sh"), ("\n".join(lines) + "\n").encode(), 0o755)
        self.write(f"step {self.index} will run in {self.step.get('container', '')}")

    def _write_mounts(self) -> None:
        """The uploaded files each mount of the step covers, where the run step mounts them."""
        uploaded = self.input.get("mountFiles") or {}
        for n, mount in enumerate(self.step.get("mount") or []):
            path = posixpath.normpath(mount["path"])
            base = f"{BATCH_DIR}/mounts/{self.index}/{n}"
            for name, data in sorted(uploaded.items()):
                if name == path:
                    write_file(self.workspace, base, base64.b64decode(data), 0o755)
                elif name.startswith(path + "/"):
                    rest = name[len(path) + 1 :]
                    write_file(self.workspace, f"{base}/{rest}", base64.b64decode(data), 0o755)

    def _condition(self, text: str, data: Mapping[str, Any]) -> bool:
        try:
            return evaluate_condition(text, data)
        except TemplateError as exc:
            raise HelperError(f"steps[{self.index}].if: {exc}") from exc

    def post(self) -> dict[str, Any]:
        """Record the step's result in the host directory and print it for the server."""
        previous = self.previous()
        skipped = safe_path(self.workspace, self._batch("skip")).exists()
        if skipped:
            result = {**(previous or empty_result()), "stepIndex": self.index, "skipped": True}
        else:
            diff, changed = self.git.changes()
            stdout = _text(read_capped(safe_path(self.workspace, self._batch("out")), READ_CAP))
            stderr = _text(read_capped(safe_path(self.workspace, self._batch("err")), READ_CAP))
            result = {
                "stepIndex": self.index,
                "skipped": False,
                **encode_diff(diff),
                "changedFiles": changed,
                "stdout": stdout,
                "stderr": stderr,
                "outputs": dict((previous or {}).get("outputs") or {}),
            }
            data = step_data(self.input, previous, self.secrets)
            data["step"] = {
                "modified_files": changed["modified"],
                "added_files": changed["added"],
                "deleted_files": changed["deleted"],
                "renamed_files": changed["renamed"],
                "stdout": stdout,
                "stderr": stderr,
            }
            for name, output in (self.step.get("outputs") or {}).items():
                text = _render(output["value"], data, f"steps[{self.index}].outputs.{name}")
                result["outputs"][name] = parse_output(text, output.get("format", "text"), name)
        self._result_path(self.index).write_text(json.dumps(result))
        shown = {
            **result,
            "stdout": result.get("stdout", "")[:STREAM_CAP],
            "stderr": result.get("stderr", "")[:STREAM_CAP],
        }
        self.write(RESULT_PREFIX + json.dumps(shown, separators=(",", ":")))
        return result


def empty_result() -> dict[str, Any]:
    """The result before any step: no changes, no output."""
    return {
        "diff": "",
        "changedFiles": {"modified": [], "added": [], "deleted": [], "renamed": []},
        "stdout": "",
        "stderr": "",
        "outputs": {},
    }


def encode_diff(diff: bytes) -> dict[str, str]:
    """The diff as JSON text: as is when it is UTF-8, else base64 (binary-safe either way)."""
    try:
        return {"diff": diff.decode("utf-8")}
    except UnicodeDecodeError:
        return {"diffBase64": base64.b64encode(diff).decode()}


def decode_diff(result: Mapping[str, Any]) -> bytes:
    """The diff bytes of a step result."""
    if result.get("diffBase64"):
        return base64.b64decode(result["diffBase64"])
    return str(result.get("diff") or "").encode("utf-8")


def parse_output(text: str, fmt: str, name: str) -> Any:
    """A rendered output value in its declared format."""
    if fmt == "json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise HelperError(f"output {name} is not valid json: {exc}") from exc
    if fmt == "yaml":
        # Imported only when an output needs it: every step would pay for the import.
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            return YAML(typ="safe", pure=True).load(text)
        except YAMLError as exc:
            raise HelperError(f"output {name} is not valid yaml: {exc}") from exc
    return text


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


USAGE = "usage: batch-helper pre|post STEP"


def run_in_process(
    args: list[str],
    *,
    workspace: Path,
    host: Path,
    env: Mapping[str, str],
    write: Callable[[str], None],
) -> int:
    """`pre|post STEP` as the executor's in-process host tool; its exit code."""
    if len(args) != 2 or args[0] not in ("pre", "post") or not args[1].isdigit():
        write(USAGE)
        return 2
    try:
        helper = Helper(workspace, host, int(args[1]), env, write)
        if args[0] == "pre":
            helper.pre()
        else:
            helper.post()
    except HelperError as exc:
        write(f"step {args[1]} ({args[0]}): {exc}")
        return 1
    return 0
