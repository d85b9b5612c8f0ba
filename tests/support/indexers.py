"""Indexer image tarballs for tests: built once per machine by deploy/indexers/build, cached.

The cache lives in $XDG_CACHE_HOME/offload-test/indexers/ (default ~/.cache/...), one
directory per indexer, version and build recipe, so a changed recipe or version builds anew
and everything else is reused across test runs.
"""

from __future__ import annotations

import fcntl
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

BUILD = Path(__file__).resolve().parents[2] / "deploy" / "indexers" / "build"


class IndexerBuildFailed(RuntimeError):
    """deploy/indexers/build could not make the image here; the message is what it said."""


def recipe_module() -> ModuleType:
    """deploy/indexers/build loaded as a module (it has no .py suffix: it is a command)."""
    loader = importlib.machinery.SourceFileLoader("offload_indexer_build", str(BUILD))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up while the class is made.
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


def cache_root() -> Path:
    """Where built tarballs are kept between test runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "offload-test" / "indexers"


def indexer_tarball(name: str) -> tuple[Path, str]:
    """The rootfs tarball of indexer `name` and the image name to import it as; built by
    deploy/indexers/build the first time (under a lock, so concurrent runs build it once)."""
    build = recipe_module()
    indexer = build.INDEXERS[name]
    directory = cache_root() / f"{name}-{indexer.version}-{build.recipe()}"
    tarball = directory / build.tarball_name(indexer)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.is_file():
            done = subprocess.run(
                [sys.executable, str(BUILD), name, "--out", str(directory)],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            if done.returncode != 0:
                raise IndexerBuildFailed(
                    f"deploy/indexers/build {name} failed (exit {done.returncode}): "
                    f"{done.stderr.strip()[-2000:]}"
                )
    return tarball, indexer.image
