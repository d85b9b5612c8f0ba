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
import stat
import struct
import tarfile
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote

from offload.executor.datadir import data_dir_flag
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
# What names a layout and a bundle on disk: only this, so a ref can point nowhere else.
_HEX = re.compile(r"^[a-f0-9]{32,128}$")


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


def import_hint(name: str, data_dir: Path | None = None) -> str:
    """What to run to make `name` available without a registry, in the store of `data_dir`
    (None: the store `offload executor images` finds by default)."""
    return (
        f"import it with `offload executor images import{data_dir_flag(data_dir)} "
        f"{name} TARBALL_OR_DIR`"
    )


class ImageInUse(RuntimeError):
    """A running step uses the image's root filesystem; the message says which and what to do."""


@dataclass(frozen=True)
class Image:
    """One image of the store: its name, manifest digest, where it came from, and if unpacked."""

    name: str
    digest: str
    source: str
    unpacked: bool
    # Bytes of its layout (layers as stored, config, manifest), and when it was stored (UTC).
    size: int = 0
    imported: str = ""


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
        data_dir: Path | None = None,
    ) -> None:
        self.root = root
        # The --data-dir that names this store to `offload executor images` (None: found by
        # default), so that the import an error suggests lands where this store looks.
        self.data_dir = data_dir
        self.umoci = umoci
        self.skopeo = skopeo
        self._pull = pull
        self._pull_timeout = pull_timeout
        self._mountpoints = tuple(mountpoints)

    async def import_image(self, name: str, source: Path) -> Image:
        """Store `source` (rootfs tarball or directory, OCI layout or archive) as `name`."""
        name = normalize(name)
        source = await asyncio.to_thread(source.absolute)
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
                f"or {import_hint(name, self.data_dir)}"
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
                    f"failed ({exc}); {import_hint(name, self.data_dir)}"
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
                            f"executor does not pull images; {import_hint(name, self.data_dir)}"
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
            _lockable(bundle / "rootfs")
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
                images.append(self._image(ref))
        return sorted(images, key=lambda image: image.name)

    def in_use(self, digest: str) -> bool:
        """Whether a running step has the image's root filesystem as its root.

        The sandbox runtime's bubblewrap holds a read lock on the root it runs on
        (`--lock-file /`) for as long as the step's namespaces live; this asks the kernel.
        """
        return _read_locked(self._bundle(digest) / "rootfs")

    async def remove(self, name: str) -> Image:
        """Forget `name`; its layout and unpacked rootfs go too unless another name shares them.

        ImageNotFound when the store has no such image; ImageInUse, changing nothing, while a
        running step uses its rootfs.
        """
        name = normalize(name)
        missing = ImageNotFound(
            f"image {name} is not in the image store {self.root}; "
            f"`offload executor images list{data_dir_flag(self.data_dir)}` shows the images it has"
        )
        if self._ref(name) is None:
            raise missing
        async with self._locked(f"ref-{_key(name)}"):
            ref = self._ref(name)
            if ref is None:
                raise missing
            image = self._image(ref)
            async with self._locked(f"unpack-{_hex(image.digest)}"):
                self._refuse_in_use(image)
                shared = any(
                    other.digest == image.digest and other.name != name for other in self.list()
                )
                async with self._scratch() as scratch:
                    bundle = self._bundle(image.digest)
                    if not shared and bundle.is_dir():
                        # Moved aside first: a step that started since the check holds its lock
                        # on the same directory, and one starting now finds no rootfs to bind.
                        bundle.rename(scratch / "bundle")
                        if _read_locked(scratch / "bundle" / "rootfs"):
                            (scratch / "bundle").rename(bundle)
                            self._refuse_in_use(image, running=True)
                    (self.root / "refs" / f"{_key(name)}.json").unlink()
                    layout = self.root / "layouts" / _hex(image.digest)
                    if not shared and layout.is_dir():
                        layout.rename(scratch / "layout")
        return image

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
        return self._image(ref)

    def _ref(self, name: str) -> dict[str, str] | None:
        """The stored ref of `name`; None when missing, unreadable or pointing nowhere valid."""
        try:
            path = self.root / "refs" / f"{_key(name)}.json"
            ref: dict[str, str] = json.loads(path.read_text())
            _hex(ref["digest"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return ref

    def _image(self, ref: dict[str, str]) -> Image:
        digest = ref["digest"]
        blobs = self.root / "layouts" / _hex(digest)
        size = sum(p.lstat().st_size for p in blobs.rglob("*") if p.is_file())
        return Image(
            ref["name"],
            digest,
            ref.get("source", ""),
            self._bundle(digest).is_dir(),
            size=size,
            imported=ref.get("stored", ""),
        )

    def _refuse_in_use(self, image: Image, *, running: bool = False) -> None:
        if running or self.in_use(image.digest):
            raise ImageInUse(
                f"image {image.name} is in use by a running step (its rootfs "
                f"{self._bundle(image.digest) / 'rootfs'}); remove it once that job has finished"
            )

    def _digest(self, name: str) -> str:
        ref = self._ref(name)
        if ref is None:
            raise ImageNotFound(
                f"image {name} is not in the image store {self.root}; "
                f"{import_hint(name, self.data_dir)}"
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
            await asyncio.to_thread(_remove_tree, scratch)

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
    """The hex part of a digest, which names its layout and bundle: checked, so that it
    always names an entry right under layouts/ or bundles/."""
    hex_part = digest.split(":", 1)[-1]
    if not _HEX.match(hex_part):
        raise ValueError(f"{digest!r} is not a sha256 or sha512 digest")
    return hex_part


def _remove_tree(path: Path) -> None:
    """rm -rf, also through directories an image made read-only (a rootless unpack keeps
    their modes, which stops even their owner from emptying them)."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError:
        _owner_writable(path)
        shutil.rmtree(path, ignore_errors=True)


def _owner_writable(root: Path) -> None:
    """chmod u+rwx every directory under `root` (never following a symlink)."""
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        with contextlib.suppress(OSError):
            mode = os.lstat(directory).st_mode
            if stat.S_ISDIR(mode) and mode & stat.S_IRWXU != stat.S_IRWXU:
                os.chmod(directory, mode | stat.S_IRWXU)
            with os.scandir(directory) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))


def _read_locked(path: Path) -> bool:
    """Whether any process holds a POSIX read lock on `path` (False when it does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        # struct flock as F_GETLK reads it: l_type, l_whence, l_start, l_len, l_pid.
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        held = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, probe))[0]
    finally:
        os.close(fd)
    return bool(held != fcntl.F_UNLCK)


def _place_bundle(made: Path, bundle: Path, mountpoints: Sequence[str]) -> None:
    """Add the mount points to a fresh bundle's rootfs, then rename it into the cache."""
    for mountpoint in mountpoints:
        target = made / "rootfs" / mountpoint.lstrip("/")
        if not os.path.lexists(target):
            target.mkdir(mode=0o755, parents=True)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    _passable(made)
    _lockable(made / "rootfs")
    made.rename(bundle)


def _lockable(rootfs: Path) -> None:
    """Let a step's uid open the root it runs on, as bubblewrap's `--lock-file /` must."""
    mode = rootfs.stat().st_mode
    if mode & 0o005 != 0o005:
        rootfs.chmod(mode | 0o005)


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
