"""A job's outbound network: TCP to the ``host:port`` destinations it was allowed, nothing else.

Strategy (docs/isolation.md, "Egress"): every container is made with a network
namespace holding only ``lo``; a job with an allow-list gets, at its start, a
user-mode network stack attached to that namespace (``slirp4netns``, run by the
supervisor on the host: a ``tap0`` inside, each outbound connection re-made by
slirp4netns as an ordinary socket of the host) and an nftables table *inside*
the container's namespace whose output chain accepts ``lo`` and TCP to the
allowed (address, port) pairs and rejects everything else at once (TCP gets
EHOSTUNREACH, anything else EPERM), so a refusal is immediate and testable.
The job has no capability in its namespaces (dropped before the exec), so it
cannot change the table, the routes or open raw sockets.

Host names are resolved on the host when the job starts (``resolve``); the
addresses are checked against what is never allowed (loopback, link-local and
the metadata address, multicast, the host's own addresses, slirp4netns' own
network) and pinned in the table. The job resolves the same names through a
tiny resolver the supervisor serves *inside* the container's namespace on
127.0.0.1:53 (glibc's default nameserver when there is no /etc/resolv.conf,
as in every container): it answers only the allowed names, with the pinned
addresses, and NXDOMAIN to everything else, so DNS carries nothing out.

Why not a veth with nftables on the host: it needs IP forwarding (a host-wide
sysctl) and a host-side address per container; the user-mode stack needs
neither, and every host-side object it has is one process that dies with an
``exit-fd`` we hold. Its cost is measured per job start (docs/benchmarks.md).

This module knows nothing of jobs or transports; ``Container`` attaches it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass, field

import trio

from sandboxd.isolation import _libc

SLIRP = "slirp4netns"
SLIRP_ARGV0 = "sandboxd-slirp4netns"  # what leftovers.py looks for in /proc/PID/cmdline
SLIRP_NET = ipaddress.ip_network("10.0.2.0/24")  # slirp4netns' own: gateway .2, DNS .3
MAX_DESTINATIONS = 32
SETUP_TIMEOUT = 10.0

# Never reachable through an allow-list, whatever the operator allows.
FORBIDDEN = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    str(SLIRP_NET)))


class EgressError(ValueError):
    """An allow-list entry that is malformed, not permitted here, or resolves to an
    address that is never allowed."""


@dataclass(frozen=True, slots=True)
class Destination:
    """``host:port`` as a job or profile wrote it; ``host`` a name or an IPv4 address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _split(text: str) -> tuple[str, str]:
    if not isinstance(text, str) or text.count(":") != 1:
        raise EgressError(f"{text!r}: expected host:port (IPv4 or a name; no IPv6)")
    host, port = text.split(":")
    return host.strip().lower().rstrip("."), port.strip()


def _valid_name(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    return all(0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
               and label.isascii() for label in host.split("."))


def parse_destination(text: str) -> Destination:
    host, port = _split(text)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise EgressError(f"{text!r}: the port must be 1 to 65535")
    if not _valid_name(host):
        raise EgressError(f"{text!r}: not a host name or IPv4 address")
    return Destination(host, int(port))


def parse_allow(items: object, where: str = "network.allow") -> tuple[Destination, ...]:
    """A list of ``host:port`` strings, or ``EgressError`` naming ``where``."""
    if not isinstance(items, (list, tuple)):
        raise EgressError(f"{where}: expected a list of \"host:port\" strings")
    if len(items) > MAX_DESTINATIONS:
        raise EgressError(f"{where}: at most {MAX_DESTINATIONS} destinations")
    try:
        return tuple(dict.fromkeys(parse_destination(i) for i in items))
    except EgressError as e:
        raise EgressError(f"{where}: {e}") from None


@dataclass(frozen=True, slots=True)
class Pattern:
    """One entry of the operator's ``egress_allow``: ``*`` or a name or a network, then
    ``:*`` or a port. A job's destination must match one; an empty list forbids egress."""

    host: str  # "*", a lower-case name, or "" when ``network`` is set
    port: int | None  # None: any port
    network: ipaddress.IPv4Network | None = None

    def matches(self, dest: Destination) -> bool:
        if self.port is not None and dest.port != self.port:
            return False
        if self.host == "*":
            return True
        if self.network is not None:
            try:
                return ipaddress.IPv4Address(dest.host) in self.network
            except ValueError:
                return False
        return dest.host == self.host


def parse_pattern(text: str) -> Pattern:
    host, port = _split(text)
    if port == "*":
        port_n = None
    elif port.isdigit() and 0 < int(port) < 65536:
        port_n = int(port)
    else:
        raise EgressError(f"{text!r}: the port must be 1 to 65535 or *")
    if host == "*":
        return Pattern("*", port_n)
    if "/" in host or host.replace(".", "").isdigit():
        try:
            return Pattern("", port_n, ipaddress.IPv4Network(host))
        except ValueError as e:
            raise EgressError(f"{text!r}: {e}") from None
    if not _valid_name(host):
        raise EgressError(f"{text!r}: not *, a host name or an IPv4 network")
    return Pattern(host, port_n)


def permit(dests: tuple[Destination, ...], caps: tuple[Pattern, ...]) -> None:
    """Refuse destinations the operator's ``egress_allow`` does not cover (all of them,
    when it is empty: the default)."""
    if not dests:
        return
    if not caps:
        raise EgressError("network egress is not enabled on this server (the operator's "
                          "egress_allow is empty)")
    for d in dests:
        if not any(p.matches(d) for p in caps):
            raise EgressError(f"network.allow: {d} is not permitted by this server's "
                              "egress_allow")


def host_addresses() -> set[ipaddress.IPv4Address]:
    """Every IPv4 address of the host's interfaces (the kernel's LOCAL routes)."""
    found: set[ipaddress.IPv4Address] = set()
    last = None
    with contextlib.suppress(OSError), open("/proc/net/fib_trie") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("|--", "+--"):
                last = parts[1]
            elif "host LOCAL" in line and last is not None:
                with contextlib.suppress(ValueError):
                    found.add(ipaddress.IPv4Address(last))
    return found


def forbidden(addr: ipaddress.IPv4Address, own: set[ipaddress.IPv4Address]) -> str | None:
    """Why ``addr`` can never be a job's destination, or None."""
    if addr in own:
        return "an address of this host"
    for net in FORBIDDEN:
        if addr in net:
            return ("the user-mode stack's own network" if net == SLIRP_NET
                    else "loopback, link-local, multicast or reserved")
    return None


@dataclass(frozen=True, slots=True)
class Policy:
    """The operator's word on egress (configuration): the patterns a job's destinations
    must match (none: no egress at all) and the names pinned to addresses."""

    allow: tuple[Pattern, ...] = ()
    hosts: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Plan:
    """What a job's network allows, resolved: (address, port) pairs for the table, and
    the names the in-container resolver answers."""

    pairs: tuple[tuple[str, int], ...]
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)


def parse_hosts(items: object) -> dict[str, str]:
    """The operator's ``egress_hosts``: ``"NAME=IPv4"`` entries, names pinned to addresses
    (looked up before the host's resolver, as /etc/hosts would be)."""
    out: dict[str, str] = {}
    for item in items if isinstance(items, (list, tuple)) else [items]:
        name, sep, addr = str(item).partition("=")
        name = name.strip().lower().rstrip(".")
        try:
            ipaddress.IPv4Address(addr.strip())
        except ValueError:
            sep = ""
        if not sep or not _valid_name(name):
            raise EgressError(f"{item!r}: expected NAME=IPv4-address")
        out[name] = addr.strip()
    return out


def resolve(dests: tuple[Destination, ...], pinned: dict[str, str] | None = None) -> Plan:
    """Resolve names on the host (``pinned`` first; blocking: call in a thread) and refuse
    what is never allowed; ``EgressError`` names the destination and why."""
    own = host_addresses()
    pinned = pinned or {}
    pairs: dict[tuple[str, int], None] = {}
    names: dict[str, tuple[str, ...]] = {}
    for d in dests:
        try:
            addrs = [ipaddress.IPv4Address(pinned.get(d.host, d.host))]
            if d.host in pinned:
                names[d.host] = (pinned[d.host],)
        except ValueError:
            try:
                infos = socket.getaddrinfo(d.host, d.port, socket.AF_INET, socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise EgressError(f"network.allow: {d}: cannot resolve {d.host!r} on the "
                                  f"server: {e.strerror}") from None
            addrs = list(dict.fromkeys(ipaddress.IPv4Address(i[4][0]) for i in infos))
            names[d.host] = tuple(dict.fromkeys((*names.get(d.host, ()),
                                                 *(str(a) for a in addrs))))
        for a in addrs:
            why = forbidden(a, own)
            if why:
                raise EgressError(f"network.allow: {d}: {a} is {why}, never allowed")
            pairs[(str(a), d.port)] = None
    return Plan(tuple(pairs), names)


def ruleset(plan: Plan) -> str:
    """The nftables table loaded into the container's namespace: default drop, ``lo``
    and the allowed pairs accepted, the rest rejected (an immediate error, not a hang)."""
    allowed = ", ".join(f"{a} . {p}" for a, p in plan.pairs)
    out_allow = f"        ip daddr . tcp dport {{ {allowed} }} accept\n" if allowed else ""
    in_allow = f"        ip saddr . tcp sport {{ {allowed} }} accept\n" if allowed else ""
    return (
        "table inet sandboxd {\n"
        "    chain out {\n"
        "        type filter hook output priority 0; policy drop;\n"
        "        oif \"lo\" accept\n"
        f"{out_allow}"
        "        meta l4proto tcp reject with icmpx type admin-prohibited\n"
        "        reject with icmpx type admin-prohibited\n"
        "    }\n"
        "    chain in {\n"
        "        type filter hook input priority 0; policy drop;\n"
        "        iif \"lo\" accept\n"
        f"{in_allow}"
        "    }\n"
        "}\n")


# ---------------------------------------------------------------- the resolver

def dns_answer(query: bytes, names: dict[str, tuple[str, ...]]) -> bytes | None:
    """The reply to one DNS query over UDP: the pinned A records of an allowed name
    (none for other types), NXDOMAIN for any other name; None for what is not a
    well-formed single-question query (dropped)."""
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack(">HHH", query[:6])
    if flags & 0x8000 or (flags >> 11) & 0xF or qdcount != 1:
        return None
    i, labels = 12, []
    while True:
        if i >= len(query) or len(labels) > 127:
            return None
        n = query[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 or i + 1 + n > len(query):
            return None
        labels.append(query[i + 1:i + 1 + n])
        i += 1 + n
    if i + 4 > len(query):
        return None
    qtype, qclass = struct.unpack(">HH", query[i:i + 4])
    question = query[12:i + 4]
    name = b".".join(labels).decode("ascii", "replace").lower()
    addrs = names.get(name)
    rcode = 0 if addrs is not None else 3
    answers = list(addrs or ()) if qtype in (1, 255) and qclass == 1 else []
    reply = struct.pack(">HHHHHH", qid, 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode,
                        1, len(answers), 0, 0) + question
    for a in answers:
        reply += struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(a)
    return reply


class _Resolver:
    """A thread serving ``dns_answer`` on 127.0.0.1:53 of the container's namespace.

    The socket is made by a thread of its own that enters the namespace first (a
    namespace is per thread; the thread is never reused, so the daemon's other threads
    stay in the host's namespace); the socket stays in that namespace for good.
    """

    def __init__(self, netns: int, names: dict[str, tuple[str, ...]]) -> None:
        self.names = names
        self.stop = False
        self.ready = threading.Event()
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._serve, args=(netns,),
                                       name="sandboxd-egress-dns", daemon=True)

    def _serve(self, netns: int) -> None:
        try:
            _libc.setns(netns, _libc.CLONE_NEWNET)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.bind(("127.0.0.1", 53))
            sock.settimeout(0.2)
        except OSError as e:
            self.error = e
            return
        finally:
            self.ready.set()
        with sock:
            while not self.stop:
                try:
                    query, peer = sock.recvfrom(512)
                except TimeoutError:
                    continue
                except OSError:
                    return
                reply = dns_answer(query, self.names)
                if reply is not None:
                    with contextlib.suppress(OSError):
                        sock.sendto(reply, peer)


# ---------------------------------------------------------------- attach

class Egress:
    """A container's network, attached: slirp4netns and the resolver. ``close`` ends both."""

    def __init__(self, slirp: trio.Process, exit_w: int, resolver: _Resolver | None) -> None:
        self.slirp = slirp
        self._exit_w = exit_w
        self.resolver = resolver

    async def close(self) -> None:
        """Idempotent; never raises. slirp4netns exits on its exit-fd's EOF; killed if not."""
        if self.resolver is not None:
            self.resolver.stop = True
        if self._exit_w >= 0:
            os.close(self._exit_w)
            self._exit_w = -1
        with trio.CancelScope(shield=True):
            with trio.move_on_after(2.0):
                await self.slirp.wait()
            if self.slirp.returncode is None:
                with contextlib.suppress(OSError):
                    self.slirp.kill()
                await self.slirp.wait()


async def _nft(netns: int, rules: str) -> None:
    proc = await trio.run_process(
        ["nsenter", f"--net=/proc/self/fd/{netns}", "nft", "-f", "-"], stdin=rules.encode(),
        capture_stdout=True, capture_stderr=True, check=False, pass_fds=(netns,))
    if proc.returncode:
        raise OSError(0, f"nft in the container's namespace failed ({proc.returncode}): "
                         f"{proc.stderr.decode(errors='replace').strip()[:300]}")


async def attach(pidfd: int, pid: int, plan: Plan) -> Egress:
    """Give the container whose init is ``pid`` (held by ``pidfd``) the network ``plan``
    allows: the resolver, slirp4netns and, while it configures its interface, the table;
    done when both are (the job is handed over only after). ``OSError`` if any fails;
    nothing is left running then."""
    netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    slirp: trio.Process | None = None
    resolver: _Resolver | None = None
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    # slirp4netns' messages go to a memfd, read only if it fails: a pipe we stopped reading
    # could block it or end it with SIGPIPE in the middle of a job.
    log = os.memfd_create("sandboxd-slirp4netns", os.MFD_CLOEXEC)
    try:
        _libc.pidfd_send_signal(pidfd, 0)  # the pid is still that init: the fd is its netns
        with trio.fail_after(SETUP_TIMEOUT):
            if plan.names:
                resolver = _Resolver(netns, plan.names)
                resolver.thread.start()
                await trio.to_thread.run_sync(resolver.ready.wait)
                if resolver.error is not None:
                    raise resolver.error
            slirp = await trio.lowlevel.open_process(
                [SLIRP_ARGV0, "--configure", "--mtu=65520", "--disable-host-loopback",
                 "--disable-dns", "--enable-sandbox", "--enable-seccomp",
                 "--netns-type=path", f"--exit-fd={exit_r}", f"--ready-fd={ready_w}",
                 f"/proc/self/fd/{netns}", "tap0"],
                executable=SLIRP, pass_fds=(netns, exit_r, ready_w),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
            os.close(ready_w)
            ready_w = -1
            # The table loads while slirp4netns configures its interface: no job runs in
            # the container before both are done, so the order inside does not matter.
            await _nft(netns, ruleset(plan))
            got = b""
            while not got:
                await trio.lowlevel.wait_readable(ready_r)
                got = os.read(ready_r, 1)
                if not got:
                    with trio.move_on_after(1.0):
                        await slirp.wait()
                    err = os.pread(log, 4096, 0).decode(errors="replace").strip()
                    raise OSError(0, "slirp4netns exited before configuring the network: "
                                     f"{err[-300:]}")
        egress = Egress(slirp, exit_w, resolver)
        exit_w = -1
        return egress
    except BaseException:
        if resolver is not None:
            resolver.stop = True
        if slirp is not None:
            with trio.CancelScope(shield=True):
                with contextlib.suppress(OSError):
                    slirp.kill()
                await slirp.wait()
        raise
    finally:
        for fd in (netns, exit_r, ready_r, ready_w, exit_w, log):
            if fd >= 0:
                os.close(fd)
