"""One port for every child: a ``SO_REUSEPORT`` listening socket per child slot.

Why not one socket shared by all: asyncio and uvloop accept every pending connection
at once when woken, so on a shared socket one child takes a burst of connections
(e.g. a provider's 64) and the others idle. With ``SO_REUSEPORT`` the kernel spreads
new connections over the sockets by their address hash.

The parent binds them all before any child starts and keeps them: a restarted child
gets its slot's socket back, and connections the kernel queued on it meanwhile wait for
it instead of being refused.
"""

from __future__ import annotations

import socket


def reuseport_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on ``host:port``, inheritable by children.

    ``port`` must be a real port (the caller first binds it alone, which both checks it
    is free — a socket with SO_REUSEPORT would share a port another SO_REUSEPORT
    program holds — and turns port 0 into one). Raises OSError.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    made: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(1024)
            sock.set_inheritable(True)
    except OSError:
        for sock in made:
            sock.close()
        raise
    return made
