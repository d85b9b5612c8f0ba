"""A workspace job as an executor job: pre/run/post per step, and what happens when it ends.

For each spec step i from the first uncached one: `pre.i` (host tool `batch-helper pre i`),
`run.i` (the step's container, in the runtime, in the workspace's directory) and `post.i`
(`batch-helper post i`). The run step's wrapper keeps stdout and stderr in files for the post
step and exits with the script's own exit code.
"""

from __future__ import annotations

import json
import posixpath

from offload.batches.execution import execution_input, secret_names
from offload.batches.helper import BATCH_DIR, INPUT, REPOSITORY
from offload.batches.results import ResultError, Results
from offload.batches.store import BatchStore
from offload.db.base import Database
from offload.dispatch.queue import TransformError
from offload.protocol.wire import CliStep, DockerStep, Job, JobFile, StepMount
from offload.queue.record import LogEntry, Record
from offload.secrets.cipher import CipherError
from offload.secrets.store import Secrets, UnknownSecret, placeholder


def run_commands(index: int, path: str) -> list[str]:
    """The run step's wrapper, from the workspace's directory inside the checkout.

    The script runs with the executor's shell for the image ($OFFLOAD_SHELL: bash when it has
    one); its stdout goes through `tee .out` to the log's stdout, its stderr through
    `tee .err` to the log's stderr. The redirections sit on the script's own command: a
    shell writes a command's `set -x` trace before it applies the command's redirections, so
    the wrapper's trace reaches the log only, never .out or .err.

    The pipeline runs untraced, announced by one line of its own: the shell traces a
    pipeline's parts from concurrent subshells, whose traces interleave mid-word in the log.
    """
    up = "../" * (1 + len([p for p in path.split("/") if p]))
    base = f"{up}{BATCH_DIR}/step{index}"
    shell = '"${OFFLOAD_SHELL:-/bin/sh}"'
    return [
        f'if [ -e {base}.skip ]; then echo "step {index} skipped"; exit 0; fi',
        f'{{ set +x; }} 2>/dev/null; echo "+ ${{OFFLOAD_SHELL:-/bin/sh}} {base}.sh" >&2',
        f"{{ {{ {shell} {base}.sh 2>&1 1>&3 3>&-; echo $? > {base}.exit; }} "
        f"| tee {base}.err 1>&2; }} 3>&1 | tee {base}.out",
        "set -x",
        f"read -r code < {base}.exit",
        'exit "$code"',
    ]


async def to_executor_job(record: Record, db: Database, *, secrets: Secrets) -> Job:
    """The executor job of a batch workspace job, with the secrets of its batch spec's
    namespace (bind `secrets` with functools.partial to make it the queue's Transform)."""
    store = BatchStore(db)
    workspace = await store.workspace(int(record.fields["workspace_id"]))
    row = await store.spec(int(record.fields["batch_spec_id"]))
    if workspace is None or row is None:
        raise TransformError("its batch spec or workspace no longer exists")
    spec = await row.parsed()
    start = workspace.cached_steps
    try:
        cached = (
            await Results(db, secrets, store).cached_result(row, spec, workspace) if start else None
        )
        # The spec's owner (a user or an organization) is the namespace its jobs run in.
        values = await secrets.values_for_job(
            row.user_name, secret_names(spec.steps), queue=record.queue, job_id=record.id
        )
    except (ResultError, UnknownSecret, CipherError) as exc:
        raise TransformError(str(exc)) from exc
    if start and cached is None:
        start = 0  # the cache entry went away since resolution: run every step
    env = [f"{n}={v}" for n, v in values.items()]
    files = await store.files(row.id) if any(s.mount for s in spec.steps) else {}
    payload = execution_input(spec, workspace, start_at=start, cached_result=cached, files=files)
    docker: list[DockerStep] = []
    cli: list[CliStep] = []
    sequence: list[str] = []
    workdir = posixpath.join(REPOSITORY, workspace.path) if workspace.path else REPOSITORY
    for i in range(start, len(spec.steps)):
        step = spec.steps[i]
        mounts = []
        for n, target in enumerate(sorted(step.files)):
            if not target.startswith("/"):
                raise TransformError(f"steps[{i}].files: {target!r} must be an absolute path")
            mounts.append(StepMount(source=f"{BATCH_DIR}/files/{i}/{n}", target=target))
        for n, mount in enumerate(step.mount):
            mounts.append(StepMount(source=f"{BATCH_DIR}/mounts/{i}/{n}", target=mount.mountpoint))
        cli.append(CliStep(key=f"pre.{i}", command=["batch-helper", "pre", str(i)], env=env))
        docker.append(
            DockerStep(
                key=f"run.{i}",
                image=step.container,
                commands=run_commands(i, workspace.path),
                dir=workdir,
                mounts=mounts,
            )
        )
        cli.append(CliStep(key=f"post.{i}", command=["batch-helper", "post", str(i)], env=env))
        sequence += [f"pre.{i}", f"run.{i}", f"post.{i}"]
    return Job(
        id=record.id,
        queue=record.queue,
        repository_name=workspace.repo_name,
        repository_directory=REPOSITORY,
        commit=workspace.commit,
        shallow_clone=True,
        sparse_checkout=[f"{workspace.path}/*"] if workspace.only_fetch_workspace else [],
        files={INPUT: JobFile(content=json.dumps(payload))},
        docker_steps=docker,
        cli_steps=cli,
        sequence=sequence,
        redacted_values={v: placeholder(n) for n, v in values.items()},
    )


async def finish(
    record: Record, db: Database, logs: list[LogEntry], ok: bool, *, secrets: Secrets
) -> None:
    """Keep the results of a job that ended; ResultError fails a completed one (bind
    `secrets` with functools.partial to make it the queue's Finish)."""
    store = BatchStore(db)
    workspace = await store.workspace(int(record.fields["workspace_id"]))
    row = await store.spec(int(record.fields["batch_spec_id"]))
    if workspace is None or row is None:
        raise ResultError("its batch spec or workspace no longer exists")
    await Results(db, secrets, store).record(row, workspace, logs, ok, job_id=record.id)
