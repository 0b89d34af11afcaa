"""A real Redis Cluster (3 primaries, 3 replicas) and a real Redis Sentinel group on loopback.

They are for the tests of the Redis sink against a topology that can lose its primary: a test
kills a primary (SIGKILL, no goodbye) and waits until the cluster or the sentinels have promoted
its replica, then checks what the sink did. Like ``redisserver``, tests never skip when
``redis-server`` or ``redis-cli`` is missing: they fail with how to install them.

Every server logs to ``redis.log`` in its own subdirectory, and a timeout names what was not
reached and shows the tail of those logs, so a failure says why without a rerun.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.servers import free_port, require_binary

HOST = "127.0.0.1"
SLOTS = 16384
# Flags of a CLUSTER NODES line that say the node is not (yet, or any more) a healthy member.
_UNHEALTHY = frozenset({"fail", "fail?", "handshake", "noaddr", "nofailover"})


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (``free_port`` may hand out the same one twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _admin(port: int) -> redis.Redis:
    """A short-lived client for the fixtures' own questions (decoded, short timeouts)."""
    return redis.Redis(
        host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
    )


def _ask(port: int, *args: Any) -> Any:
    with _admin(port) as client:
        return client.execute_command(*args)


def _info_fields(text: str) -> dict[str, str]:
    """The ``key:value`` lines of an INFO or CLUSTER INFO reply."""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _replication(port: int) -> dict[str, Any]:
    """INFO replication, parsed by redis-py (numbers are ints)."""
    with _admin(port) as client:
        return client.info("replication")


def _role(port: int) -> str:
    """``master``, ``slave`` or ``sentinel``, from ROLE."""
    return str(_ask(port, "ROLE")[0])


def _wait_until(
    what: str, timeout: float, problem: Callable[[], str | None], logs: Callable[[], str]
) -> None:
    """Polls ``problem`` (None once ``what`` holds) until it holds, or raises a RuntimeError that
    says what was still wrong, with the servers' logs. A server that does not answer yet is just
    one more problem."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = problem()
        except (redis.RedisError, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if last is None:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {timeout} s: {last}\n{logs()}")
        time.sleep(0.05)


@attrs.define(eq=False)
class _Servers:
    """The redis-server processes of one topology, by port, each in its own subdirectory."""

    directory: Path
    processes: dict[int, subprocess.Popen[bytes]] = attrs.field(factory=dict)
    arguments: dict[int, list[str]] = attrs.field(factory=dict)

    def home(self, port: int) -> Path:
        home = self.directory / f"redis-{port}"
        home.mkdir(parents=True, exist_ok=True)
        return home

    def launch(self, port: int, args: list[str]) -> None:
        """Starts ``redis-server ARGS`` (logging to its subdirectory); ``wait_ready`` waits.

        What it prints before its log is open (a bad option, say) goes to ``console.log``: a
        pipe nobody reads could fill up and hang the server."""
        binary = require_binary("redis-server", package="redis-server", needed_for="the Redis sink")
        self.arguments[port] = args
        home = self.home(port)
        with (home / "console.log").open("ab") as console:
            self.processes[port] = subprocess.Popen(
                [binary, *args, "--logfile", str(home / "redis.log")],
                cwd=home,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 10) -> None:
        """Every launched server answers PING (one that exited is reported at once)."""

        def problem() -> str | None:
            for port, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server on port {port} exited with {process.returncode}\n"
                        f"{self.logs()}"
                    )
                if not _ask(port, "PING"):
                    return f"port {port} does not answer PING"
            return None

        _wait_until("every server answering PING", timeout, problem, self.logs)

    def relaunch(self, port: int) -> None:
        """Start a killed server again, as it was started (its cluster config file kept)."""
        self.launch(port, self.arguments[port])

    def alive(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def kill(self, port: int) -> None:
        """SIGKILL, as a crash or a lost machine would, and reaped."""
        process = self.processes[port]
        process.kill()
        process.wait(5)

    def stop(self) -> None:
        """SIGTERM to all at once, then wait (SIGKILL any that linger); killed ones are fine."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 5
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self, lines: int = 15) -> str:
        """The last ``lines`` of every server's console and log, for an error message."""
        parts = []
        for port, process in self.processes.items():
            state = "running" if process.poll() is None else f"exited {process.returncode}"
            parts.append(f"--- port {port} ({state})")
            for log in (self.home(port) / "console.log", self.home(port) / "redis.log"):
                text = log.read_text(errors="replace") if log.exists() else ""
                if text.strip():
                    tail = "\n".join(text.splitlines()[-lines:])
                    parts.append(f"{log}:\n{tail}")
        return "\n".join(parts)


def _common_args(port: int, home: Path) -> list[str]:
    # repl-diskless-sync-delay defaults to 5 s in 7.0: every first sync would wait that long.
    return ["--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(home), "--repl-diskless-sync-delay", "0"]  # fmt: skip


@attrs.frozen
class _NodeLine:
    """One line of CLUSTER NODES."""

    id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    connected: bool
    slots: tuple[str, ...]

    @classmethod
    def parse(cls, line: str) -> _NodeLine:
        node_id, address, flags, master, _, _, _, link, *slots = line.split()
        port = int(address.split("@", 1)[0].rsplit(":", 1)[1])
        return cls(
            node_id,
            port,
            frozenset(flags.split(",")),
            None if master == "-" else master,
            link == "connected",
            tuple(slots),
        )

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags


def _cluster_nodes(port: int) -> list[_NodeLine]:
    with _admin(port) as client:
        text = client.execute_command("CLUSTER", "NODES", NEVER_DECODE=True).decode()
    return [_NodeLine.parse(line) for line in text.splitlines() if line.strip()]


def _cluster_info(port: int) -> dict[str, str]:
    with _admin(port) as client:
        return _info_fields(client.execute_command("CLUSTER", "INFO", NEVER_DECODE=True).decode())


def _slot_owners(port: int) -> list[int | None]:
    """For every slot, the port of the primary that ``port`` says serves it (None: nobody)."""
    with _admin(port) as client:
        ranges = client.execute_command("CLUSTER", "SLOTS", NEVER_DECODE=True)
    owners: list[int | None] = [None] * SLOTS
    for first, last, primary, *_ in ranges:
        owners[first : last + 1] = [int(primary[1])] * (last - first + 1)
    return owners


@attrs.frozen
class _Lost:
    """What a killed primary served, and who replicated it, to recognise its successor."""

    slots: tuple[int, ...]
    replicas: tuple[int, ...]


class _Topology:
    """``start()`` runs ``_start()``; what it started before failing is stopped again."""

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


@attrs.define(eq=False)
class RedisClusterNodes(_Topology):
    """``start()`` launches 6 cluster-enabled redis-servers (no persistence) and joins them into
    3 primaries with one replica each; ``stop()`` ends them all.

    Failover is quick (node timeout 1 s) and always allowed (replica validity factor 0: a replica
    that lost its primary long ago may still take over). Each node gets its own cluster bus port
    (``cluster-port``): the default, port + 10000, may be taken or beyond 65535.
    """

    directory: Path
    ports: list[int] = attrs.field(init=False)
    bus_ports: list[int] = attrs.field(init=False)
    primaries_at_start: list[int] = attrs.field(init=False, factory=list)
    _servers: _Servers = attrs.field(init=False)
    _lost: dict[int, _Lost] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        ports = _free_ports(12)
        self.ports, self.bus_ports = ports[:6], ports[6:]
        self._servers = _Servers(self.directory)

    @property
    def url(self) -> str:
        """The sink spec: the three primaries at creation, as seed nodes."""
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.primaries_at_start)

    def client(self) -> RedisCluster:
        """A cluster client for assertions, seeded with every node still alive."""
        nodes = [ClusterNode(HOST, port) for port in self._servers.alive()]
        return RedisCluster(startup_nodes=nodes, socket_timeout=5)

    def _start(self) -> None:
        cli = require_binary("redis-cli", package="redis-tools", needed_for="the Redis sink")
        for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
            cluster = ["--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                       "--cluster-config-file", str(self.directory / f"nodes-{port}.conf"),
                       "--cluster-node-timeout", "1000",
                       "--cluster-replica-validity-factor", "0"]  # fmt: skip
            self._servers.launch(port, [*_common_args(port, self._servers.home(port)), *cluster])
        self._servers.wait_ready()
        create = [cli, "--cluster", "create", *(f"{HOST}:{p}" for p in self.ports),
                  "--cluster-replicas", "1", "--cluster-yes"]  # fmt: skip
        created = subprocess.run(
            create,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({created.returncode}):\n"
                f"{created.stdout}\n{created.stderr}\n{self._servers.logs()}"
            )
        _wait_until("a healthy cluster", 20, self._unhealthy, self._servers.logs)
        primaries = {n.port for n in _cluster_nodes(self.ports[0]) if n.is_primary}
        self.primaries_at_start = [port for port in self.ports if port in primaries]

    def _unhealthy(self) -> str | None:
        """Why the cluster is not yet 3 primaries, each with its replica in sync, as every node
        sees it (None when it is)."""
        for port in self.ports:
            info = _cluster_info(port)
            if info.get("cluster_state") != "ok":
                return f"{port}: cluster_state {info.get('cluster_state')}"
            if info.get("cluster_slots_ok") != str(SLOTS):
                return f"{port}: cluster_slots_ok {info.get('cluster_slots_ok')}"
            if info.get("cluster_known_nodes") != "6":
                return f"{port}: cluster_known_nodes {info.get('cluster_known_nodes')}"
            nodes = _cluster_nodes(port)
            for node in nodes:
                if node.flags & _UNHEALTHY or not node.connected:
                    return f"{port} sees {node.port} as {','.join(sorted(node.flags))}"
            primaries = [n for n in nodes if n.is_primary and n.slots]
            if len(primaries) != 3:
                return f"{port} sees {len(primaries)} primaries with slots"
            for primary in primaries:
                replicas = [n.port for n in nodes if n.master_id == primary.id]
                if len(replicas) != 1:
                    return f"{port} sees {primary.port} with replicas {replicas}"
                link = _replication(replicas[0]).get("master_link_status")
                if link != "up":
                    return f"replica {replicas[0]} of {primary.port}: master_link_status {link}"
        return None

    def _any_alive(self) -> int:
        alive = self._servers.alive()
        if not alive:
            raise RuntimeError("no cluster node is running")
        return alive[0]

    def primary_port_for(self, key: str) -> int:
        """The port of the primary that serves ``key``'s slot now (as a live node says)."""
        port = self._any_alive()
        owner = _slot_owners(port)[int(_ask(port, "CLUSTER", "KEYSLOT", key))]
        if owner is None:
            raise RuntimeError(f"no node serves the slot of {key!r}")
        return owner

    def move_slot(self, key: str, pause: float = 0.05) -> tuple[int, int]:
        """Move ``key``'s slot to another primary the way ``redis-cli --cluster reshard`` does
        (IMPORTING/MIGRATING, then MIGRATE key by key, then SETSLOT NODE everywhere), pausing
        ``pause`` seconds between steps so writes meet every stage (ASK, TRYAGAIN, MOVED).
        Returns (from port, to port)."""
        source = self.primary_port_for(key)
        slot = int(_ask(source, "CLUSTER", "KEYSLOT", key))
        primaries = sorted({n.port for n in _cluster_nodes(source) if n.is_primary} - {source})
        target = primaries[0]
        source_id, target_id = _ask(source, "CLUSTER", "MYID"), _ask(target, "CLUSTER", "MYID")
        _ask(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        _ask(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := _ask(source, "CLUSTER", "GETKEYSINSLOT", slot, 1):
            time.sleep(pause)
            _ask(source, "MIGRATE", HOST, target, "", 0, 5000, "KEYS", *keys)
        time.sleep(pause)
        for port in self._servers.alive():
            if _role(port) == "master":
                _ask(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return source, target

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``; if it was a primary, what it served is remembered for
        ``wait_promoted``."""
        nodes = _cluster_nodes(port)
        [me] = [n for n in nodes if "myself" in n.flags]
        if me.is_primary:
            owners = _slot_owners(port)
            self._lost[port] = _Lost(
                tuple(slot for slot, owner in enumerate(owners) if owner == port),
                tuple(n.port for n in nodes if n.master_id == me.id),
            )
        self._servers.kill(port)

    def wait_promoted(self, old_primary_port: int, timeout: float = 20) -> int:
        """Waits until a former replica of the killed primary reports role master and serves all
        its slots in the eyes of every surviving node, all of which report ``cluster_state:ok``;
        returns the new primary's port."""
        lost = self._lost.get(old_primary_port)
        if lost is None:
            raise ValueError(f"{old_primary_port} was not a primary killed with kill()")
        successor: list[int] = []

        def problem() -> str | None:
            successor.clear()
            promoted = [port for port in lost.replicas if _role(port) == "master"]
            if not promoted:
                return f"no replica of {old_primary_port} ({list(lost.replicas)}) is master"
            new = promoted[0]
            for port in self._servers.alive():
                state = _cluster_info(port).get("cluster_state")
                if state != "ok":
                    return f"{port}: cluster_state {state}"
                owners = _slot_owners(port)
                wrong = [slot for slot in lost.slots if owners[slot] != new]
                if wrong:
                    return f"{port} says slot {wrong[0]} is served by {owners[wrong[0]]}"
            successor.append(new)
            return None

        _wait_until(
            f"a replica of {old_primary_port} promoted", timeout, problem, self._servers.logs
        )
        return successor[0]

    def rejoin(self, port: int, timeout: float = 20) -> None:
        """Start a killed node again and wait until it is a replica in sync again (a killed
        primary comes back as its successor's replica): the cluster has its replicas back."""
        self._servers.relaunch(port)
        _wait_until(
            f"node {port} a replica in sync", timeout, lambda: _unsynced(port), self._servers.logs
        )

    def kill_primary_of(self, key: str, timeout: float = 20) -> tuple[int, int]:
        """Kills the primary serving ``key`` and waits for its replica to take over:
        ``(old_port, new_port)``."""
        old = self.primary_port_for(key)
        self.kill(old)
        return old, self.wait_promoted(old, timeout)

    def stop(self) -> None:
        self._servers.stop()


@attrs.define(eq=False)
class SentinelGroup(_Topology):
    """``start()`` launches a primary, its replica and 3 sentinels watching them (quorum 2,
    down after 1 s); ``stop()`` ends them all.

    ``primary_port`` and ``replica_port`` are the roles at start; after ``fail_over()`` the
    replica is the primary, and the sentinels say so (``current_primary_port()``).
    """

    directory: Path
    master_name: str = "coinfeedmaster"
    primary_port: int = attrs.field(init=False)
    replica_port: int = attrs.field(init=False)
    sentinel_ports: list[int] = attrs.field(init=False)
    _servers: _Servers = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.primary_port, self.replica_port, *self.sentinel_ports = _free_ports(5)
        self._servers = _Servers(self.directory)

    @property
    def url(self) -> str:
        """The sink spec: the three sentinels, the master name, database 0."""
        sentinels = ",".join(f"{HOST}:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{sentinels}/{self.master_name}/0"

    def current_primary_port(self) -> int:
        """The primary's port as the first sentinel that answers says."""
        problems = []
        for port in self.sentinel_ports:
            try:
                _, primary = _ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                return int(primary)
            except (redis.RedisError, OSError) as exc:
                problems.append(f"{port}: {exc}")
        raise RuntimeError(f"no sentinel answered: {problems}")

    def client(self) -> redis.Redis:
        """A plain client of the primary the sentinels name now."""
        return redis.Redis(host=HOST, port=self.current_primary_port(), socket_timeout=5)

    def _start(self) -> None:
        servers = self._servers
        primary, replica = self.primary_port, self.replica_port
        servers.launch(primary, _common_args(primary, servers.home(primary)))
        replicaof = ["--replicaof", HOST, str(primary)]
        servers.launch(replica, [*_common_args(replica, servers.home(replica)), *replicaof])
        servers.wait_ready()
        # A sentinel learns the replicas from the primary's INFO, which it asks for at once and
        # then every 10 s: the replica must be attached before the sentinels start.
        _wait_until("the replica in sync", 10, self._replica_unsynced, servers.logs)
        for port in self.sentinel_ports:
            config = servers.home(port) / "sentinel.conf"
            config.write_text(
                f"port {port}\n"
                f"bind {HOST}\n"
                f"dir {servers.home(port)}\n"
                "sentinel resolve-hostnames no\n"
                f"sentinel monitor {self.master_name} {HOST} {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                f"sentinel failover-timeout {self.master_name} 5000\n"
                f"sentinel parallel-syncs {self.master_name} 1\n"
            )
            servers.launch(port, [str(config), "--sentinel"])
        servers.wait_ready()
        _wait_until("every sentinel knowing the group", 20, self._sentinels_unaware, servers.logs)

    def _replica_unsynced(self) -> str | None:
        link = _replication(self.replica_port).get("master_link_status")
        if link != "up":
            return f"replica master_link_status {link}"
        slaves = _replication(self.primary_port).get("connected_slaves")
        return None if slaves == 1 else f"primary has {slaves} connected replicas"

    def _sentinels_unaware(self) -> str | None:
        """Why some sentinel does not yet know the primary, the replica and the other two."""
        for port in self.sentinel_ports:
            with _admin(port) as client:
                _, primary = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
                if int(primary) != self.primary_port:
                    return f"sentinel {port} names {primary} the primary"
                replicas = client.sentinel_slaves(self.master_name)
                if [(r["port"], r["flags"]) for r in replicas] != [(self.replica_port, "slave")]:
                    return f"sentinel {port} knows replicas {_brief(replicas)}"
                others = sorted(s["port"] for s in client.sentinel_sentinels(self.master_name))
                if others != sorted(set(self.sentinel_ports) - {port}):
                    return f"sentinel {port} knows sentinels {others}"
        return None

    def fail_over(self, timeout: float = 20) -> int:
        """SIGKILL the current primary and wait until all three sentinels name the other server,
        which reports role master; returns its port."""
        old = self.current_primary_port()
        [new] = {self.primary_port, self.replica_port} - {old}
        self._servers.kill(old)

        def problem() -> str | None:
            for port in self.sentinel_ports:
                _, primary = _ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                if int(primary) != new:
                    return f"sentinel {port} names {primary} the primary"
            role = _role(new)
            return None if role == "master" else f"{new} is still {role}"

        _wait_until(f"the sentinels promoting {new}", timeout, problem, self._servers.logs)
        return new

    def add_replica(self, timeout: float = 20) -> int:
        """Start a new, empty server as the current primary's replica and wait until it is in
        sync; returns its port.

        Not the killed primary again: without persistence it comes back empty, and if the
        sentinels see it as the primary once more (they did, on a loaded machine) they make the
        promoted replica copy its emptiness. Redis's replication docs warn of exactly this."""
        [port] = _free_ports(1)
        primary = self.current_primary_port()
        replicaof = ["--replicaof", HOST, str(primary)]
        self._servers.launch(port, [*_common_args(port, self._servers.home(port)), *replicaof])
        _wait_until(
            f"{port} a replica in sync", timeout, lambda: _unsynced(port), self._servers.logs
        )
        return port

    def stop(self) -> None:
        self._servers.stop()


def _unsynced(port: int) -> str | None:
    """Why the server on ``port`` is not (yet) a replica with its link to the primary up."""
    try:
        replication = _replication(port)
    except (redis.RedisError, OSError) as exc:
        return f"{port} does not answer: {exc}"
    if replication.get("role") != "slave":
        return f"{port} is {replication.get('role')}"
    link = replication.get("master_link_status")
    return None if link == "up" else f"{port} master_link_status {link}"


def _brief(entries: Iterable[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [(e.get("port"), e.get("flags")) for e in entries]
