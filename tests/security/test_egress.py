"""Egress by attack: a job reaches the destinations on its allow-list and nothing else.

The test makes its own little network: a namespace ``sandboxd-eg<pid>`` joined to
the host by a veth pair (``sandboxd<n>h`` on the host, 10.213.0.1/24; its peer
in the namespace holds 10.213.0.2 and 10.213.0.3), with a TCP server in the
namespace on both addresses and two ports, and one on the host's own end of the
veth. Nothing leaves this machine; the namespace (and the veth with it) is
removed in a ``finally``. The daemon's ``egress_allow`` permits that network,
the metadata address and a pinned name (``egress_hosts``), so that what the
tests see refused is refused by the job's own list or by the never-allowed
rules, not by the operator's cap (tested on its own).

A refusal by the table in the container's namespace is EHOSTUNREACH, at once;
a port with no server would be ECONNREFUSED and no network at all ENETUNREACH,
so each outcome says which rule answered. Every refused destination has a live
server behind it, and a control job allowed to reach it does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from attacks import AttackDaemon, lines_of

import sandboxd_protocol as proto

pytestmark = [pytest.mark.root]

NET = "10.213.0"
SERVER, OTHER, HOST_END = f"{NET}.2", f"{NET}.3", f"{NET}.1"
PORT, OTHER_PORT = 7001, 7002
MIRROR = "mirror.sandboxd.test"

DAEMON_CONFIG = {
    "egress_allow": [f"{NET}.0/24:*", "169.254.169.254:80", f"{MIRROR}:{PORT}",
                     f"own.sandboxd.test:{PORT}", "no-such-host.invalid:80"],
    "egress_hosts": [f"{MIRROR}={SERVER}", f"own.sandboxd.test={HOST_END}"],
    "http": "127.0.0.1:0", "http_loopback_open": True,
}

SERVE = f"""
import socket, threading
def serve(addr, port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(64)
    while True:
        c, _ = s.accept(); c.sendall(f"hello {{addr}}:{{port}}".encode()); c.close()
for a in ({SERVER!r}, {OTHER!r}):
    for p in ({PORT}, {OTHER_PORT}):
        threading.Thread(target=serve, args=(a, p), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


@dataclass
class EgressNet:
    netns: str
    host_hits: list[str]  # connections the server on the host's own address accepted


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def test_net() -> Iterator[EgressNet]:
    tag = os.getpid() % 100000
    netns, host_if, peer_if = f"sandboxd-eg{tag}", f"sandboxd{tag}h", f"sandboxd{tag}n"
    server = None
    host_sock = socket.socket()
    hits: list[str] = []
    try:
        _ip("netns", "add", netns)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", netns)
        _ip("addr", "add", f"{HOST_END}/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        for addr in (SERVER, OTHER):
            _ip("-n", netns, "addr", "add", f"{addr}/24", "dev", peer_if)
        _ip("-n", netns, "link", "set", peer_if, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        server = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", SERVE],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        host_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        host_sock.bind((HOST_END, PORT))
        host_sock.listen(8)

        def accept() -> None:
            while True:
                try:
                    c, peer = host_sock.accept()
                except OSError:
                    return
                hits.append(str(peer))
                c.close()

        threading.Thread(target=accept, daemon=True).start()
        yield EgressNet(netns, hits)
    finally:
        host_sock.close()
        if server is not None:
            server.kill()  # our own child, by its pid
            server.wait()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


PROBE = """
import errno, socket
def tcp(host, port):
    s = socket.socket(); s.settimeout(10)
    try:
        s.connect((host, port)); return "OK " + s.recv(100).decode()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
for target in TARGETS:
    host, port = target.rsplit(":", 1)
    print(target, tcp(host, int(port)))
"""


def probe(ad: AttackDaemon, targets: list[str], allow: list[str] | None,
          extra: str = "") -> dict[str, str]:
    network = proto.NetworkAccess(allow=tuple(allow)) if allow is not None else None
    code = f"TARGETS = {targets!r}\n{PROBE}{extra}"  # no argv: a warm start stays possible
    step = ad.run("python3", {"main.py": code.encode()}, network=network)
    assert step.verdict == "ok", step
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines_of(step)
            if ":" in line.split(" ", 1)[0]}


def test_only_the_allowed_destination_is_reachable(attack_daemon: AttackDaemon,
                                                   test_net: EgressNet) -> None:
    """Allowed SERVER:PORT answers; its other port, the other host, the host's own
    address, the metadata address, slirp4netns' gateway (the host's loopback) and the
    DNS address are refused by the table; a control job allowed those reaches them."""
    refused = [f"{SERVER}:{OTHER_PORT}", f"{OTHER}:{PORT}", f"{HOST_END}:{PORT}",
               "169.254.169.254:80", f"10.0.2.2:{PORT}", "10.0.2.3:53"]
    got = probe(attack_daemon, [f"{SERVER}:{PORT}", *refused], [f"{SERVER}:{PORT}"])
    assert got[f"{SERVER}:{PORT}"] == f"OK hello {SERVER}:{PORT}", got
    for target in refused:
        assert got[target] == "EHOSTUNREACH", (target, got)
    assert not test_net.host_hits, test_net.host_hits
    # The servers behind the refused destinations were there all along.
    control = probe(attack_daemon, [f"{SERVER}:{OTHER_PORT}", f"{OTHER}:{PORT}"],
                    [f"{SERVER}:{OTHER_PORT}", f"{OTHER}:{PORT}"])
    assert control == {f"{SERVER}:{OTHER_PORT}": f"OK hello {SERVER}:{OTHER_PORT}",
                       f"{OTHER}:{PORT}": f"OK hello {OTHER}:{PORT}"}, control


def test_udp_is_refused_except_the_resolver(attack_daemon: AttackDaemon,
                                            test_net: EgressNet) -> None:
    udp = f"DESTS = [({SERVER!r}, 53), ('10.0.2.3', 53), ('169.254.169.254', 80)]\n" + """
for dest in DESTS:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.sendto(b"x", dest); print(f"udp:{dest[0]} sent")
    except OSError as e:
        print(f"udp:{dest[0]}", errno.errorcode.get(e.errno, str(e)))
"""
    got = probe(attack_daemon, [], [f"{SERVER}:{PORT}"], udp)
    assert set(got.values()) == {"EPERM"}, got


@pytest.mark.usefixtures("warm_and_plain")
def test_no_allow_list_means_no_network(attack_daemon: AttackDaemon, test_net: EgressNet) -> None:
    """Without ``network`` (and with ``allow: []``), only ``lo`` exists: nothing routes."""
    extra = "print('ifaces:', ','.join(sorted(n for _i, n in socket.if_nameindex())))\n"
    for allow in (None, []):
        step = attack_daemon.run("python3", {"main.py": f"TARGETS = []\n{PROBE}{extra}".encode()},
                                 network=proto.NetworkAccess(allow=()) if allow == [] else None)
        assert step.verdict == "ok", step
        assert "ifaces: lo" in lines_of(step), step
        got = probe(attack_daemon, [f"{SERVER}:{PORT}", "169.254.169.254:80"], allow)
        assert set(got.values()) == {"ENETUNREACH"}, got


@pytest.mark.usefixtures("warm_and_plain")
def test_allowed_job_warm_and_plain(attack_daemon: AttackDaemon, test_net: EgressNet) -> None:
    """The network is attached at the hand-over, to a warm interpreter's container too."""
    got = probe(attack_daemon, [f"{SERVER}:{PORT}", f"{SERVER}:{OTHER_PORT}"],
                [f"{SERVER}:{PORT}"])
    assert got == {f"{SERVER}:{PORT}": f"OK hello {SERVER}:{PORT}",
                   f"{SERVER}:{OTHER_PORT}": "EHOSTUNREACH"}, got


def test_a_job_cannot_widen_its_list(attack_daemon: AttackDaemon, test_net: EgressNet) -> None:
    """Routes, the nftables table, the interface, raw and packet sockets: all refused
    (no CAP_NET_ADMIN or CAP_NET_RAW inside); the refused port stays refused after."""
    attack = r"""
import subprocess
def run(*argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return "rc=%d" % p.returncode
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
for name, argv in [("cmd:nft-flush", ["nft", "flush", "ruleset"]),
                   ("cmd:nft-add", ["nft", "add", "rule", "inet", "sandboxd", "out", "accept"]),
                   ("cmd:ip-route", ["ip", "route", "add", "10.213.0.0/24", "dev", "tap0"]),
                   ("cmd:ip-addr", ["ip", "addr", "add", "10.213.0.9/24", "dev", "tap0"]),
                   ("cmd:ip-link", ["ip", "link", "add", "x0", "type", "dummy"]),
                   ("cmd:iptables", ["iptables", "-P", "OUTPUT", "ACCEPT"])]:
    print(name, run(*argv))
for name, args in [("sock:raw", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)),
                   ("sock:packet", (socket.AF_PACKET, socket.SOCK_RAW, 0))]:
    try:
        socket.socket(*args); print(name, "ALLOWED")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, str(e)))
"""
    got = probe(attack_daemon, [f"{SERVER}:{OTHER_PORT}"], [f"{SERVER}:{PORT}"], attack)
    for name, outcome in got.items():
        if name.startswith("cmd:"):
            assert outcome != "rc=0", (name, got)
        elif name.startswith("sock:"):
            assert outcome in ("EPERM", "EACCES", "EAFNOSUPPORT"), (name, got)
    assert got[f"{SERVER}:{OTHER_PORT}"] == "EHOSTUNREACH", got


def test_names_resolve_only_on_the_list(attack_daemon: AttackDaemon, test_net: EgressNet) -> None:
    """An allowed name resolves (to its pinned address) inside and connects; other names
    (a real one included) do not resolve: the resolver answers NXDOMAIN."""
    dns = f"""
for name in [{MIRROR!r}, "example.com", "{SERVER}.nip.io"]:
    try:
        print("dns:" + name, sorted({{a[4][0] for a in socket.getaddrinfo(name, 80)}}))
    except socket.gaierror as e:
        print("dns:" + name, "gaierror", e.errno)
"""
    got = probe(attack_daemon, [f"{MIRROR}:{PORT}", f"{MIRROR}:{OTHER_PORT}"],
                [f"{MIRROR}:{PORT}"], dns)
    assert got[f"dns:{MIRROR}"] == str([SERVER]), got
    assert got["dns:example.com"].startswith("gaierror"), got
    assert got[f"dns:{SERVER}.nip.io"].startswith("gaierror"), got
    assert got[f"{MIRROR}:{PORT}"] == f"OK hello {SERVER}:{PORT}", got
    assert got[f"{MIRROR}:{OTHER_PORT}"] == "EHOSTUNREACH", got


@pytest.mark.parametrize(("allow", "says"), [
    ([f"own.sandboxd.test:{PORT}"], "an address of this host"),
    ([f"{HOST_END}:{PORT}"], "an address of this host"),
    (["169.254.169.254:80"], "link-local"),
    (["8.8.8.8:53"], "not permitted by this server's egress_allow"),
    ([f"{SERVER}:0"], "port must be 1 to 65535"),
    ([f"{SERVER}:{PORT}", "no-such-host.invalid:80"], "cannot resolve"),
])
def test_refused_lists(attack_daemon: AttackDaemon, test_net: EgressNet, allow: list[str],
                       says: str) -> None:
    """Destinations never allowed, or not permitted by the operator: the job is refused
    with a clear error and nothing runs."""
    c = attack_daemon.daemon.connect()
    try:
        c.submit("refused", "python3", files={"main.py": b"print(1)"},
                 network=proto.NetworkAccess(allow=tuple(allow)))
        res, _ = c.result("refused")
    finally:
        c.close()
    assert isinstance(res, proto.ErrorReport), res
    assert says in res.message, res


def test_http_v1_network_field(attack_daemon: AttackDaemon, test_net: EgressNet) -> None:
    """``/v1`` carries the same ``network`` object: allowed reached, the rest refused, and
    a destination the operator does not permit is a 422 naming it."""
    import httpx

    code = f"TARGETS = {[f'{SERVER}:{PORT}', f'{SERVER}:{OTHER_PORT}']!r}\n{PROBE}"
    with httpx.Client(base_url=f"http://{attack_daemon.daemon.http_address}",
                      timeout=60) as client:
        r = client.post("/v1/jobs", json={"profile": "python3", "files": {"main.py": code},
                                          "network": {"allow": [f"{SERVER}:{PORT}"]}})
        assert r.status_code == 200, r.text
        out = r.json()["steps"][0]["stdout"]
        assert f"{SERVER}:{PORT} OK hello" in out, out
        assert f"{SERVER}:{OTHER_PORT} EHOSTUNREACH" in out, out
        r = client.post("/v1/jobs", json={"profile": "python3", "files": {"main.py": "1"},
                                          "network": {"allow": ["8.8.8.8:53"]}})
        assert r.status_code == 422 and "egress_allow" in r.json()["message"], r.text
        r = client.post("/v1/jobs", json={"profile": "python3", "files": {"main.py": "1"},
                                          "network": {"allow": "8.8.8.8:53"}})
        assert r.status_code == 422 and "network.allow" in r.json()["message"], r.text
