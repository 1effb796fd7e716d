"""The container's network: a fresh network namespace with only ``lo``, brought up.

Strategy: the namespace itself is made by the clone flags (see namespaces.py);
all that is left is to set IFF_UP on the loopback interface with one ioctl, so
that programs that talk to themselves over 127.0.0.1 work and nothing else is
reachable. This module knows nothing of jobs, sockets to clients, or trio.
"""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """Bring ``lo`` up in the current network namespace (needs CAP_NET_ADMIN there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def interfaces() -> list[str]:
    """Names of the interfaces this namespace has (for tests and check-environment)."""
    return [name for _, name in socket.if_nameindex()]
