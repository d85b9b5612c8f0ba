"""Removing images from the executor's store: what goes, what stays, and never a path
outside the store."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from busybox import build_rootfs, build_tarball

from offload.executor.images import ImageStore
from offload.executor.runtimes.base import ImageNotFound


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    """A busybox rootfs tarball."""
    return build_tarball(build_rootfs(tmp_path / "rootfs"), tmp_path / "busybox.tar")


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    """An empty store that pulls nothing, named by --data-dir `tmp_path/executor`."""
    return ImageStore(tmp_path / "executor" / "images", pull=False, data_dir=tmp_path / "executor")


def entries(store: ImageStore, kind: str) -> list[str]:
    """The names under `kind` (refs, layouts, bundles) of the store."""
    return sorted(p.name for p in (store.root / kind).iterdir())


async def test_rm_keeps_what_another_name_still_uses(store: ImageStore, tarball: Path) -> None:
    await store.import_image("local/base", tarball)
    layout = store.root / "layouts" / entries(store, "layouts")[0]
    await store.import_image("local/base:v1", layout)  # the same image under a second name
    await store.ensure("local/base:v1")
    first, second = store.list()
    assert first.digest == second.digest and second.unpacked

    removed = await store.remove("local/base")

    assert removed.name == "local/base:latest" and removed.size > 0
    assert [image.name for image in store.list()] == ["local/base:v1"]
    assert len(entries(store, "bundles")) == len(entries(store, "layouts")) == 1
    assert ((await store.ensure("local/base:v1")) / "bin" / "busybox").is_file()
    await store.remove("local/base:v1")
    assert store.list() == []
    assert entries(store, "bundles") == entries(store, "layouts") == entries(store, "tmp") == []


async def test_rm_of_a_missing_image_names_the_list_command(store: ImageStore) -> None:
    with pytest.raises(ImageNotFound) as raised:
        await store.remove("local/none")
    message = str(raised.value)
    assert "image local/none:latest is not in the image store" in message
    listed = message.split("`")[1]
    assert shlex.split(listed)[-2:] == ["--data-dir", str(store.root.parent)]


async def test_rm_never_touches_a_path_outside_the_store(
    store: ImageStore, tarball: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    (victim / "rootfs").mkdir(parents=True)
    (victim / "rootfs" / "precious").write_text("keep")
    for name in ("../victim", "local/../../victim", "/victim"):
        with pytest.raises(ValueError, match="invalid image name"):
            await store.remove(name)
    # A ref whose digest climbs out of bundles/ and layouts/ is no image at all.
    (store.root / "refs").mkdir(parents=True)
    hostile = {"name": "evil/ref:latest", "digest": "sha256:../../../victim", "source": ""}
    (store.root / "refs" / "evil%2Fref%3Alatest.json").write_text(json.dumps(hostile))
    assert store.list() == []
    with pytest.raises(ImageNotFound):
        await store.remove("evil/ref")
    # A layout replaced by a symlink to elsewhere: the link goes, never what it points to.
    image = await store.import_image("local/base", tarball)
    layout = store.root / "layouts" / image.digest.split(":")[1]
    shutil.rmtree(layout)
    layout.symlink_to(victim)

    await store.remove("local/base")

    assert (victim / "rootfs" / "precious").read_text() == "keep"
    assert entries(store, "layouts") == [] and store.list() == []


def test_the_import_a_missing_image_suggests_works_with_a_space_in_its_path(
    tmp_path: Path, tarball: Path
) -> None:
    data_dir = tmp_path / "data dir" / "executor"
    store = ImageStore(data_dir / "images", pull=False, data_dir=data_dir)
    with pytest.raises(ImageNotFound) as raised:
        asyncio.run(store.ensure("local/spaced"))
    command = str(raised.value).split("`")[1]
    argv = [str(tarball) if a == "TARBALL_OR_DIR" else a for a in shlex.split(command)]
    assert argv[:4] == ["offload", "executor", "images", "import"]

    done = subprocess.run(
        [sys.executable, "-m", "offload", *argv[1:]], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert [image.name for image in store.list()] == ["local/spaced:latest"]
