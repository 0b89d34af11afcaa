"""The four forms of a Redis address, parsed without importing redis.

``redis://[USER[:PASSWORD]@]HOST[:PORT][/DB]`` and ``rediss://…`` (TLS) name one server;
``redis+cluster://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT…]`` names a Redis Cluster by some of its
nodes (redis-py's ``RedisCluster`` finds the rest); ``redis+sentinel://[USER[:PASSWORD]@]
HOST:PORT[,HOST:PORT…]/MASTER[/DB]`` names the primary that those Sentinels monitor as MASTER.
Ports default to 6379, or 26379 for a Sentinel. The credentials are the data nodes' (ACL user or
``requirepass``); Sentinels are asked without a login.

redis-py's own ``from_url`` knows only the single-server forms, so the cluster and Sentinel
forms are coinfeed's (the same shape as other clients use: comma-separated nodes).
"""

from __future__ import annotations

from typing import Final, Literal
from urllib.parse import quote, unquote, urlsplit

import attrs

REDACTED: Final = "***"
SCHEMES: Final = ("redis", "rediss", "redis+cluster", "redis+sentinel")
DEFAULT_PORT: Final = 6379
DEFAULT_SENTINEL_PORT: Final = 26379

Topology = Literal["single", "cluster", "sentinel"]


@attrs.frozen
class RedisUrl:
    """A checked Redis address. ``str()`` is its canonical text with the password as ``***``;
    :attr:`unredacted` has the password."""

    scheme: str
    nodes: tuple[tuple[str, int], ...]
    """``(host, port)`` of the server, of the cluster's seed nodes or of the Sentinels."""
    database: int = 0
    master: str | None = None
    """The name the Sentinels know the primary by (``redis+sentinel://`` only)."""
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    @property
    def topology(self) -> Topology:
        if self.scheme == "redis+cluster":
            return "cluster"
        return "sentinel" if self.scheme == "redis+sentinel" else "single"

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    def __str__(self) -> str:
        return self._text(REDACTED if self.password is not None else None)

    @property
    def unredacted(self) -> str:
        return self._text(quote(self.password, safe="") if self.password is not None else None)

    def _text(self, password: str | None) -> str:
        user = quote(self.user or "", safe="")
        userinfo = f"{user}:{password}@" if password is not None else f"{user}@" if user else ""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.nodes)
        if self.topology == "cluster":
            return f"{self.scheme}://{userinfo}{hosts}"
        path = f"/{quote(self.master or '', safe='')}" if self.topology == "sentinel" else ""
        return f"{self.scheme}://{userinfo}{hosts}{path}/{self.database}"


def parse_redis_url(text: str) -> RedisUrl | None:
    """The address ``text`` names, or None when it is not one of the four forms."""
    scheme, slashes, rest = text.partition("://")
    if not slashes or scheme not in SCHEMES:
        return None
    authority, slash, path = rest.partition("/")
    userinfo, at, netloc = authority.rpartition("@")
    if "?" in text or "#" in text or not netloc:
        return None
    user = password = None
    if at:
        raw_user, colon, raw_password = userinfo.partition(":")
        user = unquote(raw_user) or None
        password = unquote(raw_password) if colon and raw_password else None
    default_port = DEFAULT_SENTINEL_PORT if scheme == "redis+sentinel" else DEFAULT_PORT
    nodes = _parse_nodes(netloc, default_port)
    if nodes is None or (len(nodes) > 1 and scheme in ("redis", "rediss")):
        return None
    parts = [unquote(p) for p in path.split("/")] if slash and path else []
    master = None
    if scheme == "redis+sentinel":
        if not parts or not parts[0] or parts[0].isdigit():
            return None  # the primary's name is required: a bare number was meant as a DB
        master, parts = parts[0], parts[1:]
    database = _parse_database(parts)
    if database is None or (scheme == "redis+cluster" and database != 0):
        return None  # a cluster has only database 0
    return RedisUrl(scheme, nodes, database, master, user, password)


def _parse_nodes(netloc: str, default_port: int) -> tuple[tuple[str, int], ...] | None:
    nodes = []
    for item in netloc.split(","):
        try:
            parts = urlsplit(f"//{item}")
            host, port = parts.hostname, parts.port or default_port
        except ValueError:
            return None
        if not host or parts.username is not None:
            return None
        nodes.append((host, port))
    return tuple(nodes)


def _parse_database(parts: list[str]) -> int | None:
    if not parts or parts == [""]:
        return 0
    if len(parts) != 1 or not parts[0].isdigit():
        return None
    return int(parts[0])
