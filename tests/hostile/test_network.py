"""A step granted network tries to reach the executor's host and the private networks around it.

The test builds its own little world: two network namespaces behind veth pairs on private
addresses it assigns (one network the site admin allows, one it does not), an HTTP server in
each, one on the host's 127.0.0.1 and one on a host address of its own (the host side of the
allowed veth, standing for "the executor's own address"). Sandboxed steps granted network then
try them all. No traffic leaves the test's namespaces and the loopback: what the wall refuses
never leaves the sandbox, and the one server it lets through is the test's own.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from busybox import BusyboxMissing, build_rootfs, build_tarball
from ci import unavailable

from offload.executor.images import ImageStore
from offload.executor.process import StepProcess
from offload.executor.runtimes.base import Limits, Step, StepUnsupported
from offload.executor.runtimes.docker import DockerRuntime
from offload.executor.runtimes.network import dns_policy
from offload.executor.runtimes.sandbox import SandboxRuntime

IMAGE = "local/busybox"
# The image root and the default root; bwrap run by root, and (as a root executor runs
# steps) by an unprivileged host uid, which cannot read the test's image store under /tmp.
SETUPS = [
    pytest.param(IMAGE, None, id="busybox-image"),
    pytest.param(None, None, id="default-root"),
    pytest.param(None, 65534, id="default-root-as-uid-65534"),
]
# Private networks for the test's namespaces: the first pair of these that nothing on this
# host uses yet (checked against every address and route).
CANDIDATES = [("10.231.0.0/24", "10.232.0.0/24"), ("10.241.0.0/24", "10.242.0.0/24")]

# An HTTP server that says its port once listening and notes every client in a file.
SERVER = """
import http.server, sys
address, body, hits = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(hits, "a") as f:
            f.write(self.client_address[0] + "\\n")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((address, 0), Page)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@dataclass
class Server:
    """One of the test's HTTP servers: where it listens, what it answers, who asked."""

    name: str
    address: str
    port: int
    body: str
    hits: Path

    def clients(self) -> list[str]:
        """The addresses that fetched the page."""
        return self.hits.read_text().split() if self.hits.exists() else []


@dataclass
class Lab:
    """The namespaces, links and servers the test made (and removes)."""

    allowed: ipaddress.IPv4Network
    servers: dict[str, Server] = field(default_factory=dict)


def ip(*args: str) -> None:
    """Run `ip ARGS`, failing the test with its error."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr.strip()}"


def networks_in_use() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every IPv4 network this host has an address or a route in."""
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    addrs = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True).stdout)
    for link in addrs:
        for info in link.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route"], capture_output=True).stdout)
    for route in routes:
        if route["dst"] != "default":
            used.append(ipaddress.ip_network(route["dst"], strict=False))
    return used


def start_server(
    name: str, address: str, body: str, tmp: Path, netns: str | None = None
) -> tuple[subprocess.Popen[str], Server]:
    """An HTTP server on `address` (inside `netns` if given), once it listens."""
    hits = tmp / f"{name}.hits"
    argv = [sys.executable, "-c", SERVER, address, body, str(hits)]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    assert port.isdigit(), f"the {name} server did not start (exit {proc.poll()})"
    return proc, Server(name, address, int(port), body, hits)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Namespaces A (not allowed) and B (allowed) on veth pairs, and four HTTP servers."""
    if os.geteuid() != 0:
        unavailable("making network namespaces and veth pairs needs root")
    for tool, package in (("ip", "iproute2"), ("slirp4netns", "slirp4netns")):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed: apt-get install {package}")
    try:
        ctypes.CDLL("libnftables.so.1")
    except OSError:
        unavailable("libnftables is not installed: apt-get install libnftables1")
    used = networks_in_use()
    free = [
        pair
        for pair in CANDIDATES
        if not any(ipaddress.ip_network(n).overlaps(u) for n in pair for u in used)
    ]
    assert free, f"every candidate network is in use on this host: {used}"
    private, allowed = (ipaddress.IPv4Network(n) for n in free[0])
    tmp = tmp_path_factory.mktemp("network")
    tag = secrets.token_hex(3)
    namespaces: list[str] = []
    links: list[str] = []
    processes: list[subprocess.Popen[str]] = []
    world = Lab(allowed=allowed)
    try:
        for side, network in (("a", private), ("b", allowed)):
            netns, host_end = f"offload-{side}-{tag}", f"ofl{side}{tag}"
            host_ip, ns_ip = (str(network.network_address + i) for i in (1, 2))
            ip("netns", "add", netns)
            namespaces.append(netns)
            ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", netns)
            links.append(host_end)
            ip("addr", "add", f"{host_ip}/{network.prefixlen}", "dev", host_end)
            ip("link", "set", host_end, "up")
            ip("-n", netns, "addr", "add", f"{ns_ip}/{network.prefixlen}", "dev", "eth0")
            ip("-n", netns, "link", "set", "eth0", "up")
            ip("-n", netns, "link", "set", "lo", "up")
            name = "allowed" if side == "b" else "private"
            proc, server = start_server(name, ns_ip, f"{name}-page-{tag}", tmp, netns)
            processes.append(proc)
            world.servers[name] = server
            if side == "b":
                # The host's own address, inside the network the admin allows.
                proc, server = start_server("host-address", host_ip, f"host-page-{tag}", tmp)
                processes.append(proc)
                world.servers["host-address"] = server
        proc, server = start_server("host-loopback", "127.0.0.1", f"loopback-page-{tag}", tmp)
        processes.append(proc)
        world.servers["host-loopback"] = server
        yield world
    finally:
        for proc in processes:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for link in links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for netns in namespaces:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """An image store holding the busybox image, imported and unpacked."""
    for tool in ("umoci", "skopeo"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed: apt-get install {tool}")
    try:
        rootfs = build_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    except BusyboxMissing as exc:
        unavailable(str(exc))
    tarball = build_tarball(rootfs, tmp_path_factory.mktemp("tarball") / "busybox.tar")
    store = ImageStore(tmp_path_factory.mktemp("executor") / "images")
    asyncio.run(store.import_image(IMAGE, tarball))
    asyncio.run(store.ensure(IMAGE))
    return store


@pytest.fixture(scope="module")
def sandbox(store: ImageStore) -> SandboxRuntime:
    """The sandbox runtime."""
    for tool, package in (("bwrap", "bubblewrap"), ("prlimit", "util-linux")):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed: apt-get install {package}")
    return SandboxRuntime(store)


def workspace_for(tmp_path: Path, uid: int | None) -> Path:
    """An empty workspace the step's host uid owns."""
    path = tmp_path / "workspace"
    path.mkdir()
    if uid is not None:
        os.chown(path, uid, uid)
    return path


async def run_step(
    runtime: SandboxRuntime, ws: Path, script: str, limits: Limits, image: str | None
) -> tuple[int, str]:
    """Run `script` as one step; its exit code and its output, both streams."""
    (ws / "step.sh").write_text(script)
    run_id = f"net-{secrets.token_hex(4)}"
    argv = runtime.command(Step("probe", "step.sh", image=image), ws, limits, run_id)
    lines: list[str] = []

    async def sink(stream: str, line: str) -> None:
        lines.append(line)

    code = await StepProcess.for_runtime(runtime, run_id, argv, sink).run(timeout=60)
    return code, "\n".join(lines)


def probe(targets: dict[str, str], image: str | None) -> str:
    """A step script that fetches each target and prints `name: <answer>` on one line."""
    lines = ["cat /proc/net/dev | cut -d: -f1 | tr -d ' ' | tail -n +3 | sort | tr '\\n' ' '"]
    lines.append("echo")
    for name, where in targets.items():
        address, port = where.rsplit(":", 1)
        if image:
            fetch = (
                f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} {port} 2>&1 | tail -n 1"
            )
        else:
            fetch = (
                "python3 -c 'import sys, urllib.request as u\n"
                "try: print(u.urlopen(sys.argv[1], timeout=3).read().decode())\n"
                "except Exception as e: print(type(e).__name__, e)' "
                f"http://{address}:{port}/"
            )
        lines.append(f'echo "{name}: $({fetch})"')
    return "\n".join(lines) + "\n"


def answers(output: str) -> dict[str, str]:
    """The `name: answer` lines of a probe's output."""
    found = {}
    for line in output.splitlines():
        name, sep, answer = line.partition(": ")
        if sep:
            found[name] = answer
    return found


def targets_of(lab: Lab) -> dict[str, str]:
    """Every server, and the host's loopback once more through slirp4netns's host alias."""
    targets = {name: f"{s.address}:{s.port}" for name, s in lab.servers.items()}
    targets["host-alias"] = f"10.0.2.2:{lab.servers['host-loopback'].port}"
    return targets


@pytest.mark.parametrize(("image", "uid"), SETUPS)
async def test_granted_network_reaches_only_what_the_admin_allowed(
    sandbox: SandboxRuntime, lab: Lab, tmp_path: Path, image: str | None, uid: int | None
) -> None:
    ws = workspace_for(tmp_path, uid)
    limits = Limits(network=True, allowed_networks=(lab.allowed,), uid=uid, gid=uid)
    code, output = await run_step(sandbox, ws, probe(targets_of(lab), image), limits, image)
    assert code == 0, output
    seen = answers(output)
    interfaces = output.splitlines()[0].split()
    assert interfaces == ["lo", "tap0"], output

    # The network the admin listed: the page comes back, fetched through the host's stack.
    allowed = lab.servers["allowed"]
    assert allowed.body in seen["allowed"], output
    assert allowed.clients(), "the allowed server saw no request"
    # Everything else: nothing, and the servers never saw the step.
    for name in ("private", "host-address", "host-loopback", "host-alias"):
        assert "-page-" not in seen[name], f"the step reached {name}:\n{output}"
    for name in ("private", "host-address", "host-loopback"):
        assert lab.servers[name].clients() == [], f"{name} was reached"


async def test_without_a_grant_a_step_has_no_network(
    sandbox: SandboxRuntime, lab: Lab, tmp_path: Path
) -> None:
    ws = workspace_for(tmp_path, None)
    limits = Limits(network=False, allowed_networks=(lab.allowed,))
    code, output = await run_step(sandbox, ws, probe(targets_of(lab), None), limits, None)
    assert code == 0, output
    assert output.splitlines()[0].split() == ["lo"], output
    seen = answers(output)
    assert all("-page-" not in answer for answer in seen.values()), output
    assert "unreachable" in seen["allowed"].lower(), output


async def test_a_step_cannot_take_its_wall_down(
    sandbox: SandboxRuntime, lab: Lab, tmp_path: Path
) -> None:
    if shutil.which("nft") is None:
        unavailable("nft is not installed: apt-get install nftables")
    ws = workspace_for(tmp_path, 65534)
    limits = Limits(network=True, allowed_networks=(lab.allowed,), uid=65534, gid=65534)
    private = lab.servers["private"]
    script = (
        "nft flush ruleset; echo flush=$?\n"
        # A user namespace of its own (where it may make one) rules its own namespaces only.
        "unshare -r nft flush ruleset; echo nested-flush=$?\n"
        "ip link set tap0 down; echo down=$?\n"
        + probe({"private": f"{private.address}:{private.port}"}, None)
    )
    code, output = await run_step(sandbox, ws, script, limits, None)
    assert code == 0, output
    said = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    assert said["flush"] != "0" and said["nested-flush"] != "0", output
    assert said["down"] != "0", output
    assert private.body not in output and private.clients() == [], output


async def test_a_network_that_cannot_be_set_up_never_runs_the_step(
    store: ImageStore, tmp_path: Path
) -> None:
    # slirp4netns that fails at once: the launcher must kill the waiting sandbox.
    broken = SandboxRuntime(store, slirp4netns="/usr/bin/false")
    ws = workspace_for(tmp_path, None)
    code, output = await run_step(broken, ws, "touch /data/ran\n", Limits(network=True), image=None)
    assert code == 125, output
    assert "could not give the step its network: slirp4netns did not start" in output
    assert not (ws / "ran").exists(), "the step ran without its network set up"


async def test_the_check_line_says_how_granted_network_is_walled(
    sandbox: SandboxRuntime,
) -> None:
    line = await sandbox.check()
    assert "granted network: own namespace through slirp4netns" in line, line
    assert "EXECUTOR_JOB_ALLOWED_NETWORKS" in line


def test_docker_refuses_steps_granted_network(tmp_path: Path) -> None:
    docker = DockerRuntime(docker="docker")
    with pytest.raises(StepUnsupported, match="docker runtime does not give"):
        docker.command(Step("fetch", "step.sh"), tmp_path, Limits(network=True), "run-1")
    argv = docker.command(Step("fetch", "step.sh"), tmp_path, Limits(), "run-2")
    assert argv[argv.index("--network") + 1] == "none"


def test_dns_goes_only_to_public_or_allowed_name_servers() -> None:
    public = ipaddress.IPv4Address("9.9.9.9")
    private = ipaddress.IPv4Address("10.255.255.53")
    host = ipaddress.IPv4Address("203.0.113.7")
    allowed = ipaddress.IPv4Network("10.255.255.0/24")
    assert dns_policy([public], set(), [])[0]
    refused, why = dns_policy([public, private], set(), [])
    assert not refused and "10.255.255.53 is private" in why
    assert "EXECUTOR_JOB_ALLOWED_NETWORKS" in why
    assert dns_policy([private], set(), [allowed])[0]
    assert not dns_policy([host], {host}, [])[0]
    assert not dns_policy([], set(), [])[0]
