"""``tocsin serve`` on every core: one parent, N gateway processes, one port.

The parent owns what must exist once (the embedded Redis, the listening port) and keeps
N children running ``python -m gateway.cli serve --processes 1`` with an inherited
socket; it restarts a child that dies, and on SIGTERM/SIGINT drains them all before
the embedded Redis stops. See docs/deployment.md.
"""

from __future__ import annotations

from .child import bind_to_parent, child_logging, inherited_socket
from .cores import usable_cores
from .layout import SPREADS, layout
from .parent import ChildSpec, RestartPolicy, Supervisor
from .sockets import reuseport_sockets

__all__ = [
    "SPREADS",
    "ChildSpec",
    "RestartPolicy",
    "Supervisor",
    "bind_to_parent",
    "child_logging",
    "inherited_socket",
    "layout",
    "reuseport_sockets",
    "usable_cores",
]
