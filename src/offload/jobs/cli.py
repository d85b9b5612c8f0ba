"""`offload run` and `offload jobs ...`: generic jobs from the command line, over the HTTP API."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape

from offload import terminal
from offload.apicall import api_client as _client
from offload.apicall import call as _call

jobs_app = typer.Typer(
    help="Generic jobs: list, show, follow, cancel, retry.", no_args_is_help=True
)
out = terminal.stdout()
err = terminal.stderr()
FINISHED = {"completed", "failed", "canceled", "errored"}
POLL = 0.5
# How often a submission is sent again when its answer is lost; its Idempotency-Key makes
# the server answer a resent one with the job the first one made.
SUBMIT_RETRIES = 3


async def follow(client: httpx.AsyncClient, job_id: int, *, stream: bool = True) -> dict[str, Any]:
    """Print the job's output as it arrives until the job finishes; the finished job."""
    shown: dict[int, int] = {}
    while True:
        job = await _call(client, "GET", f"/api/jobs/{job_id}")
        entries = await _call(client, "GET", f"/api/jobs/{job_id}/logs")
        if stream:
            for entry in entries:
                text = entry["out"]
                done = shown.get(entry["id"], 0)
                if entry["id"] not in shown:
                    command = escape(" ".join(entry["command"]))
                    err.print(f"[dim]$ {command}[/]", highlight=False)
                if len(text) > done:
                    # The step's own output keeps its streams; set-up output goes to stderr.
                    is_step = entry["key"].startswith("step.")
                    for line in text[done:].splitlines(keepends=True):
                        stream_name, _, rest = line.partition(": ")
                        to_stdout = is_step and stream_name == "stdout"
                        target = sys.stdout if to_stdout else sys.stderr
                        target.write(rest if stream_name in ("stdout", "stderr") else line)
                        target.flush()
                shown[entry["id"]] = len(text)
        if job["state"] in FINISHED:
            return dict(job)
        await asyncio.sleep(POLL)


def exit_code(job: dict[str, Any]) -> int:
    """What `offload run` exits with: the step's code, or 1 (failed) / 130 (canceled)."""
    if job["state"] == "canceled":
        return 130
    if job.get("exitCode") is not None:
        return int(job["exitCode"])
    return 0 if job["state"] == "completed" else 1


def run(
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    repo: Annotated[
        str, typer.Option("--repo", help="Repository name (see `offload repos list`).")
    ],
    rev: Annotated[str, typer.Option(help="Branch, tag or commit.")] = "HEAD",
    image: Annotated[
        str, typer.Option(help="Container image of the step (default: the runtime's).")
    ] = "",
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="NAME=value (repeatable).")
    ] = None,
    secret: Annotated[
        list[str] | None, typer.Option("--secret", help="Secret to pass as env (repeatable).")
    ] = None,
    network: Annotated[
        bool, typer.Option("--network", help="Let the step use the network.")
    ] = False,
    queue: Annotated[
        str,
        typer.Option(help="Queue to wait in (default: the server's first job queue)."),
    ] = "",
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Print the job id and return.")
    ] = False,
    namespace: Annotated[
        str,
        typer.Option(
            "--namespace", "--org", help="Run it as an organization of yours (default: as you)."
        ),
    ] = "",
) -> None:
    """Run a command against a repository on the executors; stream its log; exit with its code.

    Examples:

        offload run --repo myrepo -- make test

        offload run --repo myrepo --rev v1.2.0 --image local/base -- sh -c 'ls -la'

        printf %s "$KEY" | offload secrets set API_KEY

        offload run --repo r --secret API_KEY -- ./deploy.sh

        offload run --repo r --queue gpu -- python train.py   # executors of the gpu queue

        offload run --repo r --org ml --queue gpu -- python train.py   # as organization ml
    """

    async def main() -> int:
        async with _client() as client:
            job = await _call(
                client,
                "POST",
                "/api/jobs",
                retries=SUBMIT_RETRIES,
                headers={"Idempotency-Key": uuid.uuid4().hex},
                json={
                    "repo": repo,
                    "rev": rev,
                    "command": command,
                    "image": image,
                    "env": env or [],
                    "secrets": secret or [],
                    "allowNetwork": network,
                    "queue": queue,
                    "namespace": namespace,
                },
            )
            err.print(
                f"job {job['id']} queued in {job['queue']}: {repo}@{job['commit'][:12]}",
                highlight=False,
            )
            if detach:
                out.print(job["id"])
                return 0
            try:
                final = await follow(client, int(job["id"]))
            except asyncio.CancelledError:
                return 130
            note = f" ({final['failureMessage']})" if final.get("failureMessage") else ""
            err.print(f"job {final['id']} {final['state']}{note}", highlight=False, markup=False)
            return exit_code(final)

    raise typer.Exit(asyncio.run(main()))


@jobs_app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document: the API's list of jobs.")
    ] = False,
) -> None:
    """List the newest jobs you may see (yours and your organizations'; site admins: all).

    Every field is printed whole, also into a pipe; the command comes last.

    Examples:

        offload jobs list --limit 50

        offload jobs list --json | jq -r '.[] | select(.state == "failed") | .id'
    """

    async def main() -> None:
        async with _client() as client:
            jobs = await _call(client, "GET", "/api/jobs", params={"limit": limit})
        if as_json:
            terminal.write_json(jobs)
            return
        listing = terminal.Listing(
            "id",
            "namespace",
            "queue",
            "state",
            "repository",
            "commit",
            "exit",
            "executor",
            "command",
            whole={"id", "namespace", "queue", "repository", "commit", "executor", "command"},
        )
        for job in jobs:
            listing.add(
                str(job["id"]),
                job["namespace"],
                job["queue"],
                job["state"],
                job["repository"],
                job["commit"][:12],
                "" if job["exitCode"] is None else str(job["exitCode"]),
                job["executor"] or "",
                job["command"],
            )
        listing.show(out)

    asyncio.run(main())


@jobs_app.command()
def show(job_id: int) -> None:
    """Show one job.

    Example:

        offload jobs show 42
    """

    async def main() -> None:
        async with _client() as client:
            job = await _call(client, "GET", f"/api/jobs/{job_id}")
        for key, value in job.items():
            out.print(f"{key:>14}: {value}", highlight=False, markup=False)

    asyncio.run(main())


@jobs_app.command()
def logs(
    job_id: int,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until it finishes.")
    ] = False,
) -> None:
    """Print a job's log (every command and its output).

    Examples:

        offload jobs logs 42

        offload jobs logs -f 42
    """

    async def main() -> None:
        async with _client() as client:
            if follow_:
                await follow(client, job_id)
                return
            for entry in await _call(client, "GET", f"/api/jobs/{job_id}/logs"):
                code = "" if entry["exitCode"] is None else f" (exit {entry['exitCode']})"
                command = escape(" ".join(entry["command"]))
                out.print(f"[bold]{escape(entry['key'])}[/]{code}: $ {command}", highlight=False)
                sys.stdout.write(entry["out"])
                sys.stdout.flush()

    asyncio.run(main())


@jobs_app.command()
def cancel(job_id: int) -> None:
    """Cancel a job: at once if it waits, within seconds if it runs.

    Example:

        offload jobs cancel 42
    """

    async def main() -> None:
        async with _client() as client:
            job = await _call(client, "POST", f"/api/jobs/{job_id}/cancel")
        out.print(
            f"job {job_id}: {job['state']}"
            + (" (cancel requested)" if job["state"] == "processing" else "")
        )

    asyncio.run(main())


@jobs_app.command()
def retry(job_id: int) -> None:
    """Run a finished job again.

    Example:

        offload jobs retry 42
    """

    async def main() -> None:
        async with _client() as client:
            job = await _call(client, "POST", f"/api/jobs/{job_id}/retry")
        out.print(f"job {job_id}: {job['state']}")

    asyncio.run(main())
