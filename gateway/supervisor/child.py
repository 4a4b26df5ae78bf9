"""What a gateway child does differently: die with its supervisor, say who it is in logs."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys

from ..logs import JsonFormatter

_PR_SET_PDEATHSIG = 1

#: Child log lines carry their pid (``tocsin[1234]``): N processes write to one stderr.
CHILD_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def bind_to_parent(parent: int) -> None:
    """SIGKILL this process when its supervisor dies, even by SIGKILL (Linux).

    Set by the child itself (no ``preexec_fn``: the supervisor's event loop has threads
    by then). SIGKILL, not SIGTERM: the supervisor's death is a crash, and what the
    child acknowledged is already in Redis; draining into a Redis that stops with the
    supervisor would only fail.
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        sys.exit(1)


def child_logging() -> None:
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, JsonFormatter):  # json lines carry "pid"
            handler.setFormatter(logging.Formatter(CHILD_LOG_FORMAT))


def inherited_socket(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock
