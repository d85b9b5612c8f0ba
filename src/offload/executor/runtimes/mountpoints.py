"""Where a step's mounts land inside the sandbox, resolved without following a job's symlinks.

bubblewrap sets mounts up before it enters the new root, as the executor's user: a mount
target it walks through a symlink is resolved on the HOST, and a missing mount point is
created there. The workspace (and every mount whose source is in it) holds what the job wrote,
so a symlink the repository carries or a step planted (`repository/link -> /etc`) would make
bwrap create files anywhere on the executor. So every target is resolved here first, against
a model of the sandbox's tree: symlinks in trusted layers (the image, the host's /usr) are
followed within that layer's own tree, a symlink in a layer the job controls is refused, and
bwrap gets a target with no symlink left in it.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from offload.executor.runtimes.base import WORKSPACE_MOUNT, Mount, Step, StepUnsupported

# As the kernel: more hops than this is a loop.
MAX_SYMLINKS = 40


@dataclass(frozen=True)
class Layer:
    """A tree bound at `at` inside the sandbox."""

    at: str
    host: Path | None  # the host directory behind it; None for a fresh tmpfs
    trusted: bool  # symlinks in it are the admin's (an image), not the job's
    writable: bool  # bwrap can create a missing mount point in it


@dataclass(frozen=True)
class Tree:
    """The sandbox's file tree as bwrap will build it, before the step's own mounts."""

    layers: tuple[Layer, ...]
    # Symlinks bwrap itself makes (`--symlink usr/bin /bin` on the default root).
    symlinks: tuple[tuple[str, str], ...] = ()
    where: str = "the root"

    def with_layer(self, layer: Layer) -> Tree:
        """This tree with `layer` mounted over what was at its place."""
        return Tree((*self.layers, layer), self.symlinks, self.where)

    def layer_of(self, path: str) -> Layer:
        """The layer that shows `path` (the last mounted one that covers it)."""
        for layer in reversed(self.layers):
            if path == layer.at or path.startswith(layer.at.rstrip("/") + "/"):
                return layer
        raise AssertionError(f"no layer covers {path}")  # "/" is always a layer


def workspace_layers(workspace: Path) -> tuple[Layer, ...]:
    """/tmp (a fresh tmpfs) and the workspace, as every sandbox mounts them."""
    return (
        Layer("/tmp", None, trusted=True, writable=True),
        Layer(WORKSPACE_MOUNT, workspace, trusted=False, writable=True),
    )


def resolve_mounts(step: Step, tree: Tree) -> tuple[Mount, ...]:
    """The step's mounts with symlink-free targets; StepUnsupported for one that cannot be."""
    resolved: list[Mount] = []
    for mount in step.mounts:
        target = _resolve(step.key, mount.target, tree)
        resolved.append(Mount(mount.source, target, mount.read_only))
        # A later mount may land inside this one: its source is the job's too.
        writable = not mount.read_only and mount.source.is_dir()
        tree = tree.with_layer(Layer(target, mount.source, trusted=False, writable=writable))
    return tuple(resolved)


def _resolve(key: str, target: str, tree: Tree) -> str:
    pending = [p for p in target.split("/") if p]
    done = "/"
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            done = posixpath.dirname(done)
            continue
        path = posixpath.join(done, part)
        link = _symlink(tree, path)
        if link is not None:
            if not tree.layer_of(path).trusted and path not in dict(tree.symlinks):
                raise StepUnsupported(
                    f"step {key} mounts onto {target}, which passes through the symlink {path} "
                    "that the job's workspace holds; a mount target may not go through a "
                    "symlink the repository or an earlier step made (mount onto the real path)"
                )
            hops += 1
            if hops > MAX_SYMLINKS:
                raise StepUnsupported(f"step {key} mounts onto {target}: too many symlinks")
            pending = [p for p in link.split("/") if p] + pending
            done = "/" if link.startswith("/") else done
            continue
        if _exists(tree, path):
            done = path
            continue
        # From here on bwrap creates what is missing: only where the layer lets it.
        layer = tree.layer_of(path)
        if not layer.writable:
            raise StepUnsupported(
                f"step {key} mounts {target}, which does not exist in {tree.where}: the "
                "sandbox runtime mounts onto a read-only root, where it cannot create a file or "
                "directory to mount onto; mount it under /tmp or onto a path that already "
                "exists there (or run the job with the docker runtime)"
            )
        return posixpath.join(path, *pending)
    return done


def _host(tree: Tree, path: str) -> Path | None:
    layer = tree.layer_of(path)
    if layer.host is None:
        return None
    rest = posixpath.relpath(path, layer.at)
    return layer.host if rest == "." else layer.host / rest


def _symlink(tree: Tree, path: str) -> str | None:
    own = dict(tree.symlinks).get(path)
    if own is not None and tree.layer_of(path).at == "/":
        return own
    host = _host(tree, path)
    if host is None:
        return None
    try:
        if stat.S_ISLNK(os.lstat(host).st_mode):
            return os.readlink(host)
    except OSError:
        return None
    return None


def _exists(tree: Tree, path: str) -> bool:
    layer = tree.layer_of(path)
    if layer.at == path:
        return True  # a mount point is there by definition
    host = _host(tree, path)
    return host is not None and os.path.lexists(host)


def image_tree(rootfs: Path, image: str) -> Tree:
    """An image root: read-only, its own symlinks followed within it."""
    return Tree((Layer("/", rootfs, trusted=True, writable=False),), where=f"image {image}")


def host_tree(bound: Sequence[str], symlinks: Sequence[tuple[str, str]]) -> Tree:
    """The default root: bwrap's tmpfs with the host's `bound` paths on it, read-only."""
    layers = [Layer("/", None, trusted=True, writable=True)]
    layers += [Layer(p, Path(p), trusted=True, writable=False) for p in bound]
    return Tree(tuple(layers), tuple(symlinks), where="the default root")
