"""Index jobs as executors receive them: steps, directories, the upload, requested secrets."""

from __future__ import annotations

import shlex
from pathlib import Path

from fleet import make_repo

from offload.codeintel.config import parse_config
from offload.codeintel.inference import infer_jobs
from offload.codeintel.queue import SPEC as INDEX_JOBS
from offload.codeintel.transform import indexer_name, to_executor_job
from offload.codeintel.tree import GitTree
from offload.db.base import Database
from offload.queue.store import SqlQueueStore
from offload.secrets.cipher import Cipher, new_key
from offload.secrets.store import GLOBAL, Secrets

COMMIT = "c" * 40
CONFIG = """index_jobs:
  - root: services/api
    steps:
      - root: services
        image: node:20
        commands: [npm ci]
    local_steps: [make generate]
    indexer: sourcegraph/scip-typescript@sha256:0123456789abcdef0123456789abcdef
    indexer_args: [scip-typescript, index, --output, "it's.scip"]
    outfile: it's.scip
    requestedEnvVars: [NPM_TOKEN, NOT_SET]
"""


async def leased(db: Database, payload: dict[str, object]) -> tuple[Secrets, object]:
    store = SqlQueueStore(db, INDEX_JOBS)
    await store.enqueue(
        {
            "repo_name": "acme/web",
            "commit_sha": COMMIT,
            "root": str(payload["root"]),
            "indexer": indexer_name(str(payload["indexer"])),
            "job": payload,
            "source": "configuration",
        }
    )
    (record,) = await store.dequeue("executor-1")
    return Secrets(db, Cipher(new_key())), record


async def test_a_configured_job_becomes_steps_an_upload_and_redacted_secrets(
    db: Database,
) -> None:
    (configured,) = parse_config(CONFIG)
    secrets, record = await leased(db, configured.payload())
    await secrets.set(GLOBAL, "NPM_TOKEN", "npm_s3cr3t")
    job = await to_executor_job(record, db, secrets=secrets)  # type: ignore[arg-type]
    assert (job.repository_name, job.commit, job.repository_directory) == (
        "acme/web",
        COMMIT,
        "repository",
    )
    assert job.shallow_clone and not job.allow_network
    pre, indexer = job.docker_steps
    assert (pre.key, pre.image, pre.dir, pre.commands) == (
        "pre-index.0",
        "node:20",
        "repository/services",
        ["npm ci"],
    )
    assert (indexer.key, indexer.image, indexer.dir) == (
        "indexer",
        "sourcegraph/scip-typescript@sha256:0123456789abcdef0123456789abcdef",
        "repository/services/api",
    )
    # Local steps first, then the indexer's arguments as one shell-quoted line.
    assert indexer.commands == ["make generate", "scip-typescript index --output 'it'\"'\"'s.scip'"]
    assert shlex.split(indexer.commands[1])[-1] == "it's.scip"
    assert [(u.key, u.path) for u in job.uploads] == [
        ("upload", "repository/services/api/it's.scip")
    ]
    # A requested secret that is set reaches every step, and its value is redacted; one that
    # is not set is left out rather than failing the job.
    for step in job.docker_steps:
        assert step.env == ["NPM_TOKEN=npm_s3cr3t"]
    assert job.redacted_values == {"npm_s3cr3t": "${{ secrets.NPM_TOKEN }}"}
    assert indexer_name(configured.indexer) == "scip-typescript"
    # A site that lets index jobs reach the network (OFFLOAD_CODEINTEL_NETWORK) says so in
    # the job: the executor then gives its steps the granted-network namespace.
    online = await to_executor_job(record, db, secrets=secrets, network=True)  # type: ignore[arg-type]
    assert online.allow_network


async def test_languages_without_an_indexer_here_are_ready_to_run_where_one_is(
    db: Database, tmp_path: Path
) -> None:
    """Rust, Ruby and .NET indexers cannot be had from this machine's registries; their
    inferred jobs still become complete executor jobs."""
    files = {
        "Cargo.toml": "[package]\nname = 'x'\n",
        "src/lib.rs": "",
        "app/Gemfile": "",
        "tools/Tool.csproj": "<Project/>",
    }
    commit = make_repo(tmp_path / "repo", files)
    jobs, _ = await infer_jobs(GitTree(tmp_path / "repo", commit))
    made = {}
    for inferred in jobs:
        secrets, record = await leased(db, inferred.payload())
        job = await to_executor_job(record, db, secrets=secrets)  # type: ignore[arg-type]
        made[indexer_name(inferred.indexer)] = [
            (s.key, s.image, s.dir, s.commands) for s in job.docker_steps
        ] + [u.path for u in job.uploads]
    assert made == {
        "scip-rust": [
            ("indexer", "sourcegraph/scip-rust", "repository", ["scip-rust index"]),
            "repository/index.scip",
        ],
        "scip-ruby": [
            ("indexer", "sourcegraph/scip-ruby", "repository/app", ["scip-ruby-autoindex"]),
            "repository/app/index.scip",
        ],
        "scip-dotnet": [
            (
                "indexer",
                "sourcegraph/scip-dotnet",
                "repository/tools",
                [
                    "export DOTNET_EnableWriteXorExecute=0",
                    "scip-dotnet index Tool.csproj --output index.scip",
                ],
            ),
            "repository/tools/index.scip",
        ],
    }
