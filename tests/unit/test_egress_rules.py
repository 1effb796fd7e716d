"""The egress allow-list's pure parts: parsing, the operator's cap, the never-allowed
addresses, the table's text and the filtered resolver's answers (sandboxd/egress.py).
The kernel side (slirp4netns, nftables in a container) is attacked in
tests/security/test_egress.py."""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

import pytest

from sandboxd import config, egress, profiles


def test_destinations_parse_and_refuse_malformed() -> None:
    assert egress.parse_allow(["PyPI.org.:443", "10.1.2.3:80", "10.1.2.3:80"]) == (
        egress.Destination("pypi.org", 443), egress.Destination("10.1.2.3", 80))
    for bad, says in [("pypi.org", "host:port"), ("[::1]:80", "host:port"),
                      ("a:0", "1 to 65535"), ("a:65536", "1 to 65535"), ("a:x", "1 to 65535"),
                      ("bad host:80", "not a host name"), (":80", "not a host name")]:
        with pytest.raises(egress.EgressError, match=says):
            egress.parse_allow([bad])
    with pytest.raises(egress.EgressError, match="at most 32"):
        egress.parse_allow([f"h{i}.example:1" for i in range(33)])
    with pytest.raises(egress.EgressError, match="a list"):
        egress.parse_allow("pypi.org:443")


def test_the_operator_caps_and_forbids_by_default() -> None:
    d = egress.parse_allow(["pypi.org:443", "10.9.8.7:3128"])
    with pytest.raises(egress.EgressError, match="not enabled"):
        egress.permit(d, ())
    egress.permit((), ())  # no network asked: nothing to permit
    caps = tuple(egress.parse_pattern(p) for p in ["pypi.org:443", "10.0.0.0/8:*"])
    egress.permit(d, caps)
    with pytest.raises(egress.EgressError, match=r"pypi\.org:80 is not permitted"):
        egress.permit(egress.parse_allow(["pypi.org:80"]), caps)
    with pytest.raises(egress.EgressError, match="not permitted"):
        egress.permit(egress.parse_allow(["11.0.0.1:22"]), caps)
    egress.permit(egress.parse_allow(["anything.example:443"]), (egress.parse_pattern("*:443"),))
    for bad in ["*:x", "10.0.0.0/33:1", "a b:1"]:
        with pytest.raises(egress.EgressError):
            egress.parse_pattern(bad)


def test_never_allowed_addresses() -> None:
    own = egress.host_addresses()
    assert ipaddress.IPv4Address("127.0.0.1") in own  # the kernel's LOCAL routes are read
    for addr in ["127.0.0.1", "127.1.2.3", "169.254.169.254", "0.0.0.0", "224.0.0.1",
                 "255.255.255.255", "10.0.2.2", "10.0.2.3"]:
        assert egress.forbidden(ipaddress.IPv4Address(addr), set()), addr
    for addr in own:
        assert egress.forbidden(addr, own), addr
    assert egress.forbidden(ipaddress.IPv4Address("192.0.2.1"), own) is None
    with pytest.raises(egress.EgressError, match=r"127\.0\.0\.1 is an address of this host"):
        egress.resolve(egress.parse_allow(["localhost:80"]))
    with pytest.raises(egress.EgressError, match="loopback"):
        egress.resolve(egress.parse_allow(["127.9.9.9:80"]))
    with pytest.raises(egress.EgressError, match="link-local"):
        egress.resolve(egress.parse_allow(["meta.example:80"]), {"meta.example": "169.254.169.254"})
    plan = egress.resolve(egress.parse_allow(["mirror.example:443", "192.0.2.9:80"]),
                          {"mirror.example": "192.0.2.7"})
    assert plan.pairs == (("192.0.2.7", 443), ("192.0.2.9", 80))
    assert plan.names == {"mirror.example": ("192.0.2.7",)}


def test_ruleset_accepts_only_the_pairs() -> None:
    text = egress.ruleset(egress.Plan((("192.0.2.7", 443), ("192.0.2.9", 80))))
    assert "policy drop" in text
    assert "ip daddr . tcp dport { 192.0.2.7 . 443, 192.0.2.9 . 80 } accept" in text
    assert "reject with icmpx type admin-prohibited" in text
    assert "daddr" not in egress.ruleset(egress.Plan(()))  # nothing but lo


def _query(name: str, qtype: int = 1, qid: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(
        ">HH", qtype, 1)


def test_resolver_answers_only_listed_names() -> None:
    names = {"mirror.example": ("192.0.2.7", "192.0.2.8")}
    reply = egress.dns_answer(_query("Mirror.Example"), names)
    assert reply is not None
    qid, flags, qd, an = struct.unpack(">HHHH", reply[:8])
    assert (qid, flags & 0xF, qd, an) == (0x1234, 0, 1, 2)
    assert reply.endswith(socket.inet_aton("192.0.2.8"))
    aaaa = egress.dns_answer(_query("mirror.example", 28), names)
    assert aaaa is not None and struct.unpack(">H", aaaa[6:8])[0] == 0
    other = egress.dns_answer(_query("example.com"), names)
    assert other is not None and struct.unpack(">H", other[2:4])[0] & 0xF == 3  # NXDOMAIN
    # Not a query, cut short, a compression pointer, two questions: dropped.
    q = _query("mirror.example")
    for bad in [q[:11], q[:-3], q[:2] + b"\x81\x00" + q[4:], q[:12] + b"\xc0\x0c" + q[-4:],
                q[:4] + b"\0\2" + q[6:]]:
        assert egress.dns_answer(bad, names) is None


def test_config_and_profile_keys(tmp_path: Path) -> None:
    assert config.load(None, env={}).egress_allow == ()
    cfg = config.load(None, env={}, egress_allow=["pypi.org:443"],
                      egress_hosts=["mirror.example=192.0.2.7"])
    assert config.egress_policy(cfg).hosts == {"mirror.example": "192.0.2.7"}
    with pytest.raises(config.ConfigError, match="egress_allow"):
        config.load(None, env={}, egress_allow=["pypi.org"])
    with pytest.raises(config.ConfigError, match="NAME=IPv4"):
        config.load(None, env={}, egress_hosts=["mirror.example=::1"])
    good = tmp_path / "p.toml"
    good.write_text('name = "p"\nrun = ["true"]\nnetwork_allow = ["pypi.org:443"]\n')
    assert profiles.load_file(good).network_allow == (egress.Destination("pypi.org", 443),)
    bad = tmp_path / "q.toml"
    bad.write_text('name = "q"\nrun = ["true"]\nnetwork_allow = ["pypi.org"]\n')
    with pytest.raises(profiles.ProfileError, match="network_allow"):
        profiles.load_file(bad)
