"""A tiny root filesystem made from the host's busybox-static, as a directory or a tarball."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"


class BusyboxMissing(RuntimeError):
    """No statically linked busybox on this host; the message says what to install."""


def static_busybox() -> Path:
    """The host's busybox binary, if it runs without a dynamic loader."""
    found = shutil.which("busybox")
    if found is None:
        raise BusyboxMissing("busybox is not installed: apt-get install busybox-static")
    path = Path(found).resolve()
    # A dynamic binary names its loader near the start of the file (PT_INTERP).
    if b"ld-linux" in path.read_bytes()[:4096]:
        raise BusyboxMissing(f"{path} is dynamically linked: apt-get install busybox-static")
    return path


def build_rootfs(target: Path) -> Path:
    """A root with /bin/busybox, a relative symlink per applet, /etc/passwd and /tmp."""
    busybox = static_busybox()
    bin_dir = target / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(busybox, bin_dir / "busybox")
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (bin_dir / applet).symlink_to("busybox")
    (target / "etc").mkdir()
    (target / "etc" / "passwd").write_text(PASSWD)
    (target / "tmp").mkdir()
    (target / "tmp").chmod(0o1777)  # whatever the umask: as in real images
    return target


def build_tarball(rootfs: Path, tarball: Path) -> Path:
    """`tar -C rootfs -c .`, the way users make a rootfs tarball to import."""
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    return tarball
