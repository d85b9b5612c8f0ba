"""The executor's OCI image store: import or pull images, unpack each once, hand out rootfs."""

from __future__ import annotations

import asyncio
import builtins
import bz2
import contextlib
import fcntl
import gzip
import io
import json
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote

from offload.executor.runtimes.base import WORKSPACE_MOUNT, ImageNotFound, RuntimeUnavailable

# Every layout in the store holds one image under this ref; the user's name lives in refs/.
_REF = "image"
# Directories the sandbox mounts over; made in each unpacked root so it can stay read-only.
MOUNTPOINTS = ("/proc", "/dev", "/tmp", WORKSPACE_MOUNT)

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?"
_REPOSITORY = re.compile(rf"^(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")


def normalize(name: str) -> str:
    """The canonical `repository:tag` form of an image name (`busybox` -> `busybox:latest`)."""
    ref, _, digest = name.strip().partition("@")
    last = ref.rsplit("/", 1)[-1]
    repository, tag = ref.rsplit(":", 1) if ":" in last else (ref, "")
    if not _REPOSITORY.match(repository):
        raise ValueError(
            f"invalid image name {name!r}: the repository must be lowercase letters, digits "
            "and separators (. _ -), optionally after a registry host, e.g. local/base:latest"
        )
    if tag and not _TAG.match(tag):
        raise ValueError(f"invalid image name {name!r}: tag {tag!r} is not a valid tag")
    if digest:
        if not _DIGEST.match(digest):
            raise ValueError(f"invalid image name {name!r}: {digest!r} is not a digest")
        return f"{repository}:{tag}@{digest}" if tag else f"{repository}@{digest}"
    return f"{repository}:{tag or 'latest'}"


def import_hint(name: str) -> str:
    """What to run to make `name` available without a registry."""
    return f"import it with `offload executor images import {name} TARBALL_OR_DIR`"


@dataclass(frozen=True)
class Image:
    """One image of the store: its name, manifest digest, where it came from, and if unpacked."""

    name: str
    digest: str
    source: str
    unpacked: bool


class ImageStore:
    """OCI layouts and their unpacked root filesystems under one directory, safe to share.

    Layout: refs/<name>.json -> layouts/<digest>/ (an OCI image layout) and
    bundles/<digest>/rootfs (unpacked once). Every entry is built in tmp/ and renamed into
    place, under a lock file, so concurrent jobs and processes never see a half-made image.
    """

    def __init__(
        self,
        root: Path,
        *,
        umoci: str = "umoci",
        skopeo: str = "skopeo",
        pull: bool = True,
        pull_timeout: float = 600.0,
        mountpoints: Sequence[str] = MOUNTPOINTS,
    ) -> None:
        self.root = root
        self.umoci = umoci
        self.skopeo = skopeo
        self._pull = pull
        self._pull_timeout = pull_timeout
        self._mountpoints = tuple(mountpoints)

    async def import_image(self, name: str, source: Path) -> Image:
        """Store `source` (rootfs tarball or directory, OCI layout or archive) as `name`."""
        name = normalize(name)
        async with self._scratch() as scratch:
            layout = scratch / "layout"
            kind = await asyncio.to_thread(_source_kind, source)
            if kind == "rootfs-dir":
                await self._new_layout(layout)
                await self._tool(self.umoci, "insert", "--image", f"{layout}:{_REF}", source, "/")
            elif kind == "rootfs-tar":
                tarball = await asyncio.to_thread(_uncompressed, source, scratch / "layer.tar")
                await self._new_layout(layout)
                await self._tool(
                    self.umoci, "raw", "add-layer", "--image", f"{layout}:{_REF}", tarball
                )
            else:
                await self._tool(
                    self.skopeo, "copy", "--quiet", f"{kind}:{source}", f"oci:{layout}:{_REF}"
                )
            return self._publish(name, layout, source=str(source))

    async def pull(self, name: str) -> Image:
        """Copy `name` from its registry with skopeo; ImageNotFound when it cannot be pulled."""
        name = normalize(name)
        if shutil.which(self.skopeo) is None:
            raise RuntimeUnavailable(
                f"cannot pull {name}: skopeo is not installed (apt-get install skopeo); "
                f"or {import_hint(name)}"
            )
        async with self._scratch() as scratch:
            layout = scratch / "layout"
            timeout = f"{int(self._pull_timeout)}s"
            try:
                await self._tool(
                    self.skopeo, "--command-timeout", timeout, "copy", "--quiet",
                    f"docker://{name}", f"oci:{layout}:{_REF}",
                )  # fmt: skip
            except RuntimeError as exc:
                raise ImageNotFound(
                    f"image {name} is not in the image store {self.root} and pulling it "
                    f"failed ({exc}); {import_hint(name)}"
                ) from None
            return self._publish(name, layout, source=f"docker://{name}")

    async def ensure(self, name: str) -> Path:
        """The image's rootfs, pulling it first (when allowed) and unpacking it once."""
        try:
            name = normalize(name)
        except ValueError as exc:
            raise ImageNotFound(str(exc)) from None
        if self._ref(name) is None:
            async with self._locked(f"ref-{_key(name)}"):
                if self._ref(name) is None:
                    if not self._pull:
                        raise ImageNotFound(
                            f"image {name} is not in the image store {self.root} and this "
                            f"executor does not pull images; {import_hint(name)}"
                        )
                    await self.pull(name)
        return await self.unpack(name)

    async def unpack(self, name: str) -> Path:
        """Unpack the stored image once (later calls reuse the cache); its rootfs."""
        name = normalize(name)
        digest = self._digest(name)
        bundle = self._bundle(digest)
        if bundle.is_dir():
            _passable(bundle)  # unpacked by an older offload, 0700
            return bundle / "rootfs"
        async with self._locked(f"unpack-{_hex(digest)}"):
            if bundle.is_dir():
                return bundle / "rootfs"
            async with self._scratch() as scratch:
                made = scratch / "bundle"
                layout = self.root / "layouts" / _hex(digest)
                rootless = ("--rootless",) if os.geteuid() != 0 else ()
                await self._tool(
                    self.umoci, "unpack", *rootless, "--image", f"{layout}:{_REF}", made
                )
                _place_bundle(made, bundle, self._mountpoints)
        return bundle / "rootfs"

    def rootfs(self, name: str) -> Path:
        """The unpacked root filesystem of `name`; ImageNotFound if not imported and unpacked."""
        name = normalize(name)
        rootfs = self._bundle(self._digest(name)) / "rootfs"
        if not rootfs.is_dir():
            raise ImageNotFound(f"image {name} is stored but not unpacked; prepare it first")
        return rootfs

    def env(self, name: str) -> dict[str, str]:
        """The environment the image declares (PATH and the like), from its unpacked config."""
        config = self.rootfs(name).parent / "config.json"
        try:
            pairs = json.loads(config.read_text())["process"]["env"]
        except (OSError, KeyError, TypeError, ValueError):
            return {}
        return dict(pair.split("=", 1) for pair in pairs if "=" in pair)

    def list(self) -> builtins.list[Image]:
        """Every named image of the store, sorted by name."""
        images = []
        for path in sorted((self.root / "refs").glob("*.json")):
            ref = self._ref(unquote(path.stem))
            if ref is not None:
                digest = ref["digest"]
                unpacked = self._bundle(digest).is_dir()
                images.append(Image(ref["name"], digest, ref.get("source", ""), unpacked))
        return sorted(images, key=lambda image: image.name)

    # -- internals -------------------------------------------------------------------------

    async def _new_layout(self, layout: Path) -> None:
        await self._tool(self.umoci, "init", "--layout", layout)
        await self._tool(self.umoci, "new", "--image", f"{layout}:{_REF}")

    def _publish(self, name: str, layout: Path, source: str) -> Image:
        index = json.loads((layout / "index.json").read_text())
        digest = next(
            m["digest"]
            for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == _REF
        )
        target = self.root / "layouts" / _hex(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Layouts are named by content: if another job published this digest first, keep its.
        with contextlib.suppress(FileExistsError, OSError):
            if not target.exists():
                layout.rename(target)
        if not (target / "index.json").is_file():
            raise RuntimeError(f"could not store the layout of {name} at {target}")
        stored = datetime.now(UTC).isoformat(timespec="seconds")
        ref = {"name": name, "digest": digest, "source": source, "stored": stored}
        refs = self.root / "refs"
        refs.mkdir(parents=True, exist_ok=True)
        partial = refs / f".{_key(name)}.{uuid.uuid4().hex}"
        partial.write_text(json.dumps(ref))
        partial.replace(refs / f"{_key(name)}.json")
        return Image(name, digest, source, self._bundle(digest).is_dir())

    def _ref(self, name: str) -> dict[str, str] | None:
        try:
            path = self.root / "refs" / f"{_key(name)}.json"
            ref: dict[str, str] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return ref

    def _digest(self, name: str) -> str:
        ref = self._ref(name)
        if ref is None:
            raise ImageNotFound(
                f"image {name} is not in the image store {self.root}; {import_hint(name)}"
            )
        return ref["digest"]

    def _bundle(self, digest: str) -> Path:
        return self.root / "bundles" / _hex(digest)

    @contextlib.asynccontextmanager
    async def _scratch(self) -> AsyncIterator[Path]:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=tmp))
        try:
            yield scratch
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    @contextlib.asynccontextmanager
    async def _locked(self, key: str) -> AsyncIterator[None]:
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # Polling, not a blocking flock in a thread: a cancelled waiter must not
            # acquire the lock later in a thread nobody releases it from.
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.05)
            yield
        finally:
            os.close(fd)

    async def _tool(self, *argv: str | Path) -> str:
        program = str(argv[0])
        if shutil.which(program) is None:
            raise RuntimeUnavailable(
                f"the image store needs {program}, which is not installed "
                f"(apt-get install {Path(program).name})"
            )
        proc = await asyncio.create_subprocess_exec(
            *map(str, argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
            raise RuntimeError(
                f"`{Path(program).name} {argv[1]}` exited with {proc.returncode}: {lines[-1]}"
            )
        return out.decode(errors="replace")


def _key(name: str) -> str:
    return quote(name, safe="")


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def _place_bundle(made: Path, bundle: Path, mountpoints: Sequence[str]) -> None:
    """Add the mount points to a fresh bundle's rootfs, then rename it into the cache."""
    for mountpoint in mountpoints:
        target = made / "rootfs" / mountpoint.lstrip("/")
        if not os.path.lexists(target):
            target.mkdir(mode=0o755, parents=True)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    _passable(made)
    made.rename(bundle)


def _passable(bundle: Path) -> None:
    """Let other uids pass through the bundle (umoci makes it 0700): steps of a root
    executor run bubblewrap as an unprivileged uid, which binds the rootfs by path."""
    mode = bundle.stat().st_mode
    if mode & 0o011 != 0o011:
        bundle.chmod(mode | 0o011)


def _source_kind(source: Path) -> str:
    """rootfs-dir, rootfs-tar, or the skopeo transport that reads the source."""
    if not source.exists():
        raise FileNotFoundError(f"cannot import {source}: it does not exist")
    if source.is_dir():
        return "oci" if (source / "oci-layout").is_file() else "rootfs-dir"
    names = set()
    try:
        with tarfile.open(source, mode="r|*") as tar:
            for member in tar:
                names.add(member.name.removeprefix("./"))
                if "oci-layout" in names:
                    return "oci-archive"
    except tarfile.TarError as exc:
        raise ValueError(
            f"cannot import {source}: it is neither a directory nor a (gzip, xz or bzip2) "
            f"tar archive ({exc})"
        ) from None
    # `docker save` archives: an image manifest list at the top, layers in directories.
    return "docker-archive" if "manifest.json" in names else "rootfs-tar"


def _uncompressed(source: Path, scratch: Path) -> Path:
    """umoci only adds uncompressed layers: the tarball itself, or a decompressed copy."""
    with source.open("rb") as f:
        magic = f.read(6)
    decompressed: io.BufferedIOBase
    if magic.startswith(b"\x1f\x8b"):
        decompressed = gzip.GzipFile(source, "rb")
    elif magic.startswith(b"\xfd7zXZ\x00"):
        decompressed = lzma.LZMAFile(source, "rb")
    elif magic.startswith(b"BZh"):
        decompressed = bz2.BZ2File(source, "rb")
    else:
        return source
    with decompressed, scratch.open("wb") as out:
        shutil.copyfileobj(decompressed, out, 1 << 20)
    return scratch
