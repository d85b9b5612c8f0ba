"""A root filesystem with bash: the busybox root plus the host's bash and the libraries it
loads, as a directory or (with busybox.build_tarball) a tarball to import."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from busybox import BusyboxMissing, build_rootfs

# Where the image keeps bash; /bin/bash is an absolute symlink to it, which only resolves
# right when followed inside the image.
BASH = "/usr/bin/bash"


def host_bash() -> Path:
    """The host's bash binary (symlinks resolved)."""
    found = shutil.which("bash")
    if found is None:
        raise BusyboxMissing("bash is not installed: apt-get install bash")
    return Path(found).resolve()


def libraries(binary: Path) -> list[Path]:
    """The shared objects `binary` loads, its dynamic loader included, as `ldd` lists them."""
    listed = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    found = []
    for line in listed.splitlines():
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        path = line.split("=>", 1)[-1].split("(", 1)[0].strip()
        if path.startswith("/"):
            found.append(Path(path))
    return found


def build_bash_rootfs(target: Path) -> Path:
    """The busybox root with bash at BASH, /bin/bash -> BASH, and bash's libraries at the
    paths the host's loader finds them."""
    build_rootfs(target)
    bash = host_bash()
    inside = target / BASH.lstrip("/")
    inside.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(bash, inside)
    (target / "bin" / "bash").symlink_to(BASH)
    for library in libraries(bash):
        copy = target / str(library).lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library, copy)  # the file a symlinked name stands for
    return target
