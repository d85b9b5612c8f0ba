"""Granted network for a sandboxed step: its own namespace behind slirp4netns, walled in.

slirp4netns gives the sandbox's network namespace a tap device whose packets it replays as
ordinary sockets of the executor's host, so by itself a step could reach whatever the host
reaches: its services, its addresses, the private networks around it. The wall is an
nftables ruleset in the sandbox's own namespace, installed before the step starts by a process
that holds CAP_NET_ADMIN there; the step holds no capabilities, so it cannot change it.

The no-network path never comes here. For a granted step the sandbox's argv starts with the
launcher (`python -I -S network.py ... -- env ... bwrap ...`), which:
1. starts the rest of the argv; bwrap reports the sandbox's pid on INFO_FD and waits on
   BLOCK_FD before it runs the step;
2. installs the ruleset in the sandbox's namespace (first, so that a launcher that dies
   half-way leaves a walled namespace, or one with no network at all);
3. starts slirp4netns on it (for a root executor inside a bwrap jail of its own that shows
   it no host file but resolv.conf and the tun device, and with --enable-sandbox, which
   drops its capabilities once the tap device is open);
4. releases the step, waits for it and exits with its status.
Any failure kills the sandbox before the step starts and says why on stderr.

The launcher needs nothing but the standard library, so it runs without site-packages.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Network,
    collapse_addresses,
    ip_address,
)

# Where bwrap reports the sandbox's pid, waits to be released, and reads resolv.conf from:
# the launcher puts its pipes on these descriptors for the rest of the argv to inherit, so
# nothing between the launcher and bwrap (prlimit, setpriv) may open or close them.
INFO_FD, BLOCK_FD, RESOLV_FD = 3, 4, 5

# slirp4netns's defaults: the step is 10.0.2.100; .2 is the host (refused, and walled off
# too), .3 forwards DNS to the host's resolver.
SLIRP_NETWORK = IPv4Network("10.0.2.0/24")
SLIRP_DNS = IPv4Address("10.0.2.3")
RESOLV_CONF = f"nameserver {SLIRP_DNS}\n"
# The addresses that are not globally reachable (IANA special-purpose registry), IPv4 only:
# slirp4netns runs without IPv6 here, and the wall rejects every IPv6 packet anyway.
BLOCKED = tuple(
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)

Network = IPv4Network | IPv6Network

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_NS_GET_USERNS = 0xB701  # ioctl: the user namespace that owns a namespace
_LIBNFTABLES = "libnftables.so.1"
_SETUP_FAILED = 125


class GrantedNetwork:
    """What the sandbox runtime needs to give a step the network its job was granted."""

    def __init__(self, *, slirp4netns: str = "slirp4netns", bwrap: str = "bwrap") -> None:
        self._slirp4netns = shutil.which(slirp4netns) or slirp4netns
        self._bwrap = shutil.which(bwrap) or bwrap
        self._problem: str | None = None
        self._checked = False

    def problem(self) -> str | None:
        """Why this host cannot give steps network (a missing tool), or None."""
        if not self._checked:
            self._checked = True
            if shutil.which(self._slirp4netns) is None:
                self._problem = "slirp4netns is not installed"
            else:
                try:
                    ctypes.CDLL(_LIBNFTABLES)
                except OSError:
                    self._problem = f"{_LIBNFTABLES} is not installed"
            if self._problem is not None:
                self._problem += " (apt-get install slirp4netns libnftables1)"
        return self._problem

    def failed(self, why: str) -> None:
        """Record that granted network does not work here (the runtime's check found out)."""
        self._checked, self._problem = True, why

    def launcher(self, allowed: Iterable[Network], resolv_conf: bool) -> list[str]:
        """The argv prefix that runs the rest of a step's argv with its network set up."""
        argv = [sys.executable, "-I", "-S", os.path.abspath(__file__)]
        argv += ["--slirp4netns", self._slirp4netns, "--bwrap", self._bwrap]
        # Only IPv4: the sandbox has no IPv6 route to allow anything on.
        for network in allowed:
            if isinstance(network, IPv4Network):
                argv += ["--allow", str(network)]
        if resolv_conf:
            argv.append("--resolv-conf")
        return [*argv, "--"]

    def bwrap_args(self, resolv_conf: bool) -> list[str]:
        """bwrap's side of the launcher's descriptors (resolv.conf only where it can go)."""
        argv = ["--info-fd", str(INFO_FD), "--block-fd", str(BLOCK_FD)]
        if resolv_conf:
            argv += ["--ro-bind-data", str(RESOLV_FD), "/etc/resolv.conf"]
        return argv

    def describe(self) -> str:
        """The check line's words on granted network."""
        if (problem := self.problem()) is not None:
            return f"granted network: unavailable, steps granted it fail ({problem})"
        servers = ", ".join(map(str, resolvers())) or "none"
        return (
            "granted network: own namespace through slirp4netns, IPv4 only, walled off from "
            "the host's addresses and loopback and from private ranges not in "
            f"EXECUTOR_JOB_ALLOWED_NETWORKS; DNS through the host's name servers ({servers}) "
            "only when each is public or allowed"
        )


def host_addresses(fib_trie: str = "/proc/net/fib_trie") -> set[IPv4Address]:
    """The IPv4 addresses of this host's network namespace (its local routes); SetupFailed
    when it has none, OSError when they cannot be read."""
    found: set[IPv4Address] = set()
    last = ""
    with open(fib_trie) as file:
        for line in file:
            text = line.strip()
            if text.startswith("|-- "):
                last = text[4:]
            elif text == "/32 host LOCAL" and last:
                found.add(IPv4Address(last))
    if not found:
        # Not even 127.0.0.1: a wall built from this would leave the host's addresses open.
        raise SetupFailed(f"found no address of this host in {fib_trie}")
    return found


def resolvers(resolv_conf: str = "/etc/resolv.conf") -> list[IPv4Address]:
    """The host's IPv4 name servers, which slirp4netns forwards the step's DNS to."""
    found: list[IPv4Address] = []
    try:
        with open(resolv_conf) as file:
            lines = file.read().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                address = ip_address(fields[1].split("%")[0])
            except ValueError:
                continue
            if isinstance(address, IPv4Address):
                found.append(address)
    return found


def dns_policy(
    servers: Sequence[IPv4Address], host: set[IPv4Address], allowed: Sequence[IPv4Network]
) -> tuple[bool, str]:
    """Whether the step may use DNS, and the words that say why."""
    # DNS goes to the host's resolvers: only when each is public or one a site admin allowed.
    if not servers:
        return False, "no DNS (the host has no IPv4 name server in /etc/resolv.conf)"
    for server in servers:
        if any(server in n for n in allowed):
            continue
        if server in host or any(server in n for n in BLOCKED):
            return False, (
                f"no DNS (the host's name server {server} is private; list it in "
                "EXECUTOR_JOB_ALLOWED_NETWORKS to let jobs granted network use it)"
            )
    return True, f"DNS through {', '.join(map(str, servers))}"


def ruleset(host: set[IPv4Address], allowed: Sequence[IPv4Network], dns: bool) -> str:
    """The nftables ruleset of a sandbox's namespace: what the step may send, and where."""
    reject = "reject with icmpx admin-prohibited"
    # Never reachable, whatever a site admin allows: the host itself, by any address.
    never = _set([*(IPv4Network(a) for a in host), SLIRP_NETWORK, IPv4Network("127.0.0.0/8")])
    rules = ['oifname "lo" accept', f"meta nfproto ipv6 {reject}"]
    if dns:
        rules += [f"ip daddr {SLIRP_DNS} {proto} dport 53 accept" for proto in ("udp", "tcp")]
    rules.append(f"ip daddr {never} {reject}")
    if allowed:
        rules.append(f"ip daddr {_set(allowed)} accept")
    rules += [f"ip daddr {_set(BLOCKED)} {reject}", 'oifname "tap0" accept']
    body = "".join(f"    {rule}\n" for rule in rules)
    return (
        "table inet sandbox {\n  chain output {\n"
        "    type filter hook output priority filter; policy drop;\n"
        f"{body}  }}\n}}\n"
    )


def _set(networks: Iterable[IPv4Network]) -> str:
    # nft refuses overlapping intervals in one set.
    return "{ " + ", ".join(str(n) for n in collapse_addresses(networks)) + " }"


# -- the launcher ------------------------------------------------------------------------------


class SetupFailed(RuntimeError):
    """The step's network could not be set up; the step must not start."""


def main(args: list[str]) -> int:
    """Run the argv after `--` with its sandbox's network set up; its exit status."""
    split = args.index("--")
    options, argv = args[:split], args[split + 1 :]
    slirp4netns = options[options.index("--slirp4netns") + 1]
    bwrap = options[options.index("--bwrap") + 1]
    allowed = [IPv4Network(options[i + 1]) for i, o in enumerate(options) if o == "--allow"]
    child, info_r, block_w = _spawn(argv, "--resolv-conf" in options)
    sandbox = 0
    try:
        # While bwrap makes the sandbox.
        host = host_addresses()
        dns, _ = dns_policy(resolvers(), host, allowed)
        rules = ruleset(host, allowed, dns)
        nft = _libnftables()
        info = _read_all(info_r)
        if not info:
            # bwrap failed before it made the sandbox; it said why on stderr.
            return _exit_status(child.wait())
        sandbox, netns = _sandbox_netns(info)
        userns = fcntl.ioctl(netns, _NS_GET_USERNS)
        # The wall first: should this process die half-way, the step has no way out.
        _install(nft, rules, userns, netns)
        exit_w = _start_slirp(slirp4netns, bwrap, userns, netns, dns)
    except Exception as exc:
        # Whatever went wrong, the step still waits on BLOCK_FD: it dies without having run.
        for pid in (sandbox, child.pid):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        child.wait()
        print(f"offload: could not give the step its network: {exc}", file=sys.stderr)
        return _SETUP_FAILED
    try:
        os.write(block_w, b"1")
    except BrokenPipeError:
        pass  # the sandbox failed after it reported its pid; bwrap said why
    os.close(block_w)
    status = child.wait()
    # slirp4netns leaves when this closes (or with the process group); no need to wait.
    os.close(exit_w)
    return _exit_status(status)


def _spawn(argv: list[str], resolv_conf: bool) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start `argv` with bwrap's descriptors in place; it, the info reader, the release writer."""
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe()
    # Ours above 9, theirs on the fixed numbers bwrap was told.
    info_r, block_w = _high(info_r), _high(block_w)
    theirs = {INFO_FD: _high(info_w), BLOCK_FD: _high(block_r)}
    if resolv_conf:
        resolv_r, resolv_w = os.pipe()
        os.write(resolv_w, RESOLV_CONF.encode())
        os.close(resolv_w)
        theirs[RESOLV_FD] = _high(resolv_r)
    for fd, source in theirs.items():
        os.dup2(source, fd)
        os.close(source)
    child = subprocess.Popen(argv, pass_fds=tuple(theirs))
    for fd in theirs:
        os.close(fd)
    return child, info_r, block_w


def _install(nft: ctypes.CDLL, rules: str, userns: int, netns: int) -> None:
    """Load `rules` into the namespace `netns` (owned by `userns`), from a forked child."""
    # A forked child, because entering the namespaces is for good; libnftables in-process,
    # because a process that is not root inside the namespace loses its capabilities there
    # when it execs (so `nsenter ... nft` works only for a root executor).
    errors_r, errors_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        error = ""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            for fd, kind in ((userns, _CLONE_NEWUSER), (netns, _CLONE_NEWNET)):
                if libc.setns(fd, kind) != 0:
                    raise OSError(ctypes.get_errno(), "setns into the sandbox's namespace")
            error = _nft(nft, rules)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
        os.write(errors_w, error.encode()[:4096])
        os._exit(1 if error else 0)
    os.close(errors_w)
    error = _read_all(errors_r).decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0 or error:
        raise SetupFailed(f"nftables refused the sandbox's ruleset: {error.strip()}")


def _libnftables() -> ctypes.CDLL:
    """libnftables, its functions typed; SetupFailed when it is not installed."""
    try:
        lib = ctypes.CDLL(_LIBNFTABLES)
    except OSError as exc:
        raise SetupFailed(f"{exc} (apt-get install libnftables1)") from None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    return lib


def _nft(lib: ctypes.CDLL, rules: str) -> str:
    """Run an nftables script in this process's network namespace; its errors or ""."""
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        return "libnftables could not make a context"
    lib.nft_ctx_buffer_error(ctx)
    if lib.nft_run_cmd_from_buffer(ctx, rules.encode()) == 0:
        return ""
    error: bytes = lib.nft_ctx_get_error_buffer(ctx) or b""
    return error.decode(errors="replace") or "failed"


def _start_slirp(slirp4netns: str, bwrap: str, userns: int, netns: int, dns: bool) -> int:
    """slirp4netns on the namespace, configured and ready; the descriptor that stops it."""
    ready_r, ready_w = os.pipe()
    exit_r, exit_w = os.pipe()
    errors_r, errors_w = os.pipe()
    # Never blocks slirp4netns: what does not fit is dropped (it says little once running).
    os.set_blocking(errors_w, False)
    argv = [
        slirp4netns,
        "--configure",
        "--mtu=65520",
        # 10.0.2.2 would otherwise be the host's 127.0.0.1.
        "--disable-host-loopback",
        *([] if dns else ["--disable-dns"]),
        "--enable-seccomp",
        f"--userns-path=/proc/self/fd/{userns}",
        "--netns-type=path",
        f"--ready-fd={ready_w}",
        f"--exit-fd={exit_r}",
        f"/proc/self/fd/{netns}",
        "tap0",
    ]
    if os.geteuid() == 0:
        # It parses the step's packets as root: jailed where it sees no host file but
        # resolv.conf and the tun device, and (--enable-sandbox) left with no capability
        # but binding low ports once the tap device is open.
        argv = [*_jail(bwrap, slirp4netns), *argv[:1], "--enable-sandbox", *argv[1:]]
    # Not root: it runs as the executor's uid (its own sandbox needs uid 0 in the step's
    # user namespace, which a sandbox of a non-root executor does not map).
    slirp = subprocess.Popen(
        argv,
        pass_fds=(userns, netns, ready_w, exit_r),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=errors_w,
    )
    for fd in (ready_w, exit_r, errors_w):
        os.close(fd)
    readable, _, _ = select.select([ready_r], [], [], 30.0)
    ready = os.read(ready_r, 1) if readable else b""
    os.close(ready_r)
    if ready != b"1":
        slirp.kill()
        slirp.wait()
        os.set_blocking(errors_r, False)
        try:
            said = os.read(errors_r, 4096).decode(errors="replace").strip()
        except BlockingIOError:
            said = ""
        lines = [line for line in said.splitlines() if "WARNING" not in line]
        raise SetupFailed(
            f"slirp4netns did not start (exit status {slirp.returncode}): "
            f"{'; '.join(lines[-3:]) or 'no output'}"
        )
    # errors_r stays open: slirp4netns would die of SIGPIPE on its next message otherwise.
    return exit_w


def _jail(bwrap: str, slirp4netns: str) -> list[str]:
    """bwrap (as root: no user namespace) around slirp4netns: /usr, resolv.conf, tun."""
    argv = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup"]
    argv += ["--die-with-parent", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = f"/{name}"
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    if not slirp4netns.startswith("/usr/"):
        argv += ["--ro-bind", slirp4netns, slirp4netns]
    argv += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    # Its own sandbox mounts a tmpfs on /tmp and binds /etc and /run into it.
    argv += ["--tmpfs", "/tmp", "--dir", "/run", "--dir", "/etc"]
    argv += ["--dev", "/dev", "--dev-bind", "/dev/net/tun", "/dev/net/tun", "--proc", "/proc"]
    return [*argv, "--"]


def _high(fd: int) -> int:
    """`fd` moved to 10 or above (close-on-exec), out of the way of the fixed numbers."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def _sandbox_netns(info: bytes) -> tuple[int, int]:
    """The sandbox's pid and its network namespace, opened, from bwrap's --info-fd JSON."""
    # Parsed by hand: json would cost the launcher, which runs for every granted step, ~7 ms.
    fields = {}
    for name in (b"child-pid", b"net-namespace"):
        _, found, rest = info.partition(b'"' + name + b'":')
        if not found:
            raise SetupFailed(f"bwrap reported no {name.decode()}: {info[:200]!r}")
        fields[name] = int(rest.split(b",")[0].split(b"}")[0].strip())
    pid = fields[b"child-pid"]
    netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    # The pid could be another process's by now, if the sandbox died: the wall goes only
    # into the namespace bwrap made.
    if os.fstat(netns).st_ino != fields[b"net-namespace"]:
        os.close(netns)
        raise SetupFailed(f"the sandbox (pid {pid}) ended before its network was set up")
    return pid, netns


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    os.close(fd)
    return data


def _exit_status(status: int) -> int:
    """The launcher's exit status for the child's: killed by a signal, die of it too."""
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
