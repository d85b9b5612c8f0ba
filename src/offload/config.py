"""Settings, read from the environment once at start-up and passed down explicitly."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import BaseModel, BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from offload.db.url import DatabaseURL

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> Any:
    """`30s`, `5m`, `2h`, `7d`, `250ms` or plain seconds as a timedelta; other types pass."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 2h or 7d")
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

_QUEUE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def parse_queue_names(value: Any) -> Any:
    """`default,gpu` as ["default", "gpu"]: lowercase names, no repeats, at least one."""
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    if isinstance(value, list):
        for name in value:
            if not isinstance(name, str) or not _QUEUE_NAME.match(name):
                raise ValueError(f"queue name {name!r} must be lowercase letters, digits, . _ -")
        if not value or len(set(value)) != len(value):
            raise ValueError(f"{value!r}: give one or more distinct queue names, e.g. default,gpu")
    return value


def parse_weights(value: Any) -> Any:
    """`batches=4,default=1` as {"batches": 4, "default": 1}; weights are whole numbers >= 1."""
    if not isinstance(value, str):
        return value
    weights: dict[str, int] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        name, _, weight = pair.partition("=")
        if not weight.strip().isdigit() or int(weight) < 1:
            raise ValueError(f"{pair!r} must be QUEUE=WEIGHT with a whole weight >= 1")
        weights[name.strip()] = int(weight)
    return weights


def parse_list(value: Any) -> Any:
    """`a,b` as ["a", "b"] (blanks dropped); other types pass."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


QueueNames = Annotated[list[str], NoDecode, BeforeValidator(parse_queue_names)]
Weights = Annotated[dict[str, int], NoDecode, BeforeValidator(parse_weights)]


def checkout_root() -> Path | None:
    """The source checkout offload runs from, if it runs from one."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "src" / "offload").is_dir():
        return root
    return None


class CodeHostConnection(BaseModel):
    """A code host batch changes may push to and open pull requests on (OFFLOAD_CODE_HOSTS)."""

    kind: str  # github, gitlab, gitea, bitbucketserver
    # Its API or web root, e.g. https://api.github.com. Bitbucket Server pushes need the name of
    # the user who owns the token in it: https://offload-bot@bitbucket.example.com.
    url: str
    # The global offload secret holding its token (`offload secrets set NAME --global`).
    token_secret: str
    # The host name in repository sources it serves (default: the url's, api.github.com's
    # repositories being on github.com).
    repo_host: str | None = None


def default_data_dir() -> Path:
    """`.offload` in the checkout when run from one, else the user's data directory."""
    root = checkout_root()
    if root is not None:
        return root / ".offload"
    return Path(platformdirs.user_data_dir("offload"))


class Settings(BaseSettings):
    """Every setting of every offload process (environment variables OFFLOAD_*)."""

    model_config = SettingsConfigDict(env_prefix="OFFLOAD_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    # PostgreSQL in production; unset means the embedded SQLite file in the data dir.
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    # Where commands such as `offload run` reach the server (default: host and port above).
    url: str | None = None
    worker_host: str = "127.0.0.1"
    worker_port: int = 8081
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # How long a stopping process lets running work finish before handing it back.
    stop_timeout: Duration = timedelta(seconds=30)
    resetter_interval: Duration = timedelta(seconds=5)
    janitor_interval: Duration = timedelta(minutes=10)
    metrics_interval: Duration = timedelta(seconds=5)
    # Logs of finished jobs are dropped after this; the records themselves after the next.
    logs_retention: Duration = timedelta(days=7)
    records_retention: Duration = timedelta(days=30)
    # How often `repos.syncer` fetches every mirrored repository from its source.
    repos_sync_interval: Duration = timedelta(minutes=5)
    # How often published changesets are read back from their code host.
    batches_sync_interval: Duration = timedelta(seconds=30)
    # Batch specs previewed but never applied are deleted after this (batches.spec-expirer).
    batches_spec_ttl: Duration = timedelta(days=7)
    # Step cache entries are deleted this long after they were written (batches.spec-expirer).
    batches_cache_ttl: Duration = timedelta(days=30)
    # The most workspaces of one repository and commit an executor takes in one dequeue (it
    # checks the repository out once for all of them); 1 turns bundles off.
    batches_bundle_size: int = Field(default=32, ge=1, le=256)
    # A bundle takes at most 1/SHARE of its spec's waiting workspaces, so that a small run
    # still spreads over every executor slot (1: bundles as large as BUNDLE_SIZE allows).
    batches_bundle_share: int = Field(default=16, ge=1, le=10_000)
    # ... and about this much work at most, by the spec's recent workspace durations: another
    # user's workspace waits no longer than that for a slot that runs a bundle.
    batches_bundle_seconds: Duration = timedelta(seconds=5)
    # Code hosts for repositories mirrored from a URL, as JSON, e.g.
    # [{"kind": "github", "url": "https://api.github.com", "token_secret": "GH_TOKEN"}]
    code_hosts: list[CodeHostConnection] = Field(default_factory=list)
    # Queues every namespace may use without a grant (`offload queues grant` for the others).
    open_queues: QueueNames = Field(default_factory=lambda: ["default", "batches"])
    # Audit log entries are deleted after this (identity.janitor).
    audit_retention: Duration = timedelta(days=365)
    # How long a browser session lasts after sign-in.
    session_ttl: Duration = timedelta(days=7)
    # The largest request body, in bytes (batch spec submissions and the executor protocol
    # have their own, larger limits: api/bodylimit.py).
    request_body_limit: Annotated[int, Field(ge=1024)] = 1024 * 1024
    # Who may read /metrics, /healthz and /version: `public`, or `site-admin` (with a token).
    status_routes: Literal["public", "site-admin"] = "public"
    # Reverse proxies in front of the server whose X-Forwarded-For is believed, e.g.
    # `10.0.0.5,10.0.0.6`; none by default, so a caller cannot pick the address it is seen at.
    trusted_proxies: Annotated[list[str], NoDecode, BeforeValidator(parse_list)] = Field(
        default_factory=list
    )
    # The CLI's access token (else the one `offload login` stored).
    token: str | None = None
    # The key secrets are encrypted with (a Fernet key), or a file holding one; with neither,
    # `encryption.key` in the data dir, made on first start (secrets/cipher.py).
    encryption_key: SecretStr | None = None
    encryption_key_file: Path | None = None
    # Older keys, comma-separated, still accepted for reading while `offload secrets
    # rotate-key` re-encrypts under the new one.
    encryption_old_keys: SecretStr | None = None
    # codeintel.scheduler: how often it runs, how many repositories it takes each time (in
    # ranking order), and how long a repository indexed once is left alone.
    codeintel_scheduler_interval: Duration = timedelta(minutes=2)
    codeintel_scheduler_batch_size: int = Field(default=100, ge=1, le=10_000)
    codeintel_min_index_interval: Duration = timedelta(hours=24)
    # Whether index jobs' steps may use the network (`npm install`, `go mod download` of
    # modules not in the repository): through the executor's granted-network namespace,
    # which reaches neither the executor host nor private networks. Off: indexing offline.
    codeintel_network: bool = False
    # How often codeintel.popularity folds usage events into the ranking.
    codeintel_popularity_interval: Duration = timedelta(minutes=1)
    # The largest index upload, in bytes, as sent (a gzip upload is capped again inflated).
    codeintel_upload_limit: Annotated[int, Field(ge=1024)] = 512 * 1024 * 1024
    # Uploads older than this are deleted with their data, unless they are the newest of
    # their repository, root and indexer (codeintel.uploads' janitor).
    codeintel_upload_retention: Duration = timedelta(days=30)
    # The queues of generic jobs (`offload run --queue`); the first is the default. Executors
    # take from the ones named in their EXECUTOR_QUEUE_NAME(S), e.g. a `gpu` pool.
    job_queues: QueueNames = Field(default_factory=lambda: ["default"])
    # Each queue's share of multi-queue dequeues among queues that have work, e.g.
    # `batches=4,default=1`; a queue not named here weighs 1.
    executor_queue_weights: Weights = Field(default_factory=dict)

    def server_url(self) -> str:
        """The server's base URL as clients should use it."""
        if self.url:
            return self.url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def database(self) -> DatabaseURL:
        """The database to use; raises DatabaseURLError naming OFFLOAD_DATABASE_URL if malformed."""
        if self.database_url:
            return DatabaseURL.parse(self.database_url)
        return DatabaseURL.for_sqlite(self.data_dir / "offload.db")
