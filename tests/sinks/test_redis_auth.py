"""The Redis sink as production runs it: a login (ACL user or ``requirepass``) and TLS, against
a real redis-server on loopback. The password is never in the sink's name or its errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from coinfeed.core.events import decode_event
from coinfeed.sinks import SinkOptions, open_sink
from tests.helpers import SYM, trade
from tests.sinks.kinds import PAIR, exrate
from tests.sinks.redisserver import RedisServer, TlsFiles, stream

PASSWORD = "s3cret"


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Only ACL user ``alice`` can log in (the default user is off)."""
    server = RedisServer(tmp_path, user="alice", password=PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return TlsFiles.make(tmp_path)


@pytest.fixture
def tls_server(tmp_path: Path, tls_files: TlsFiles) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, tls=tls_files)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def uuids_in(server: RedisServer) -> list[object]:
    with server.client() as client:
        entries = client.xrange(stream("trade", SYM))
    return [decode_event(fields[b"json"]).uuid for _, fields in entries]  # type: ignore[union-attr]


def test_an_acl_user_writes_with_the_password_of_its_url(acl_server: RedisServer) -> None:
    url = f"redis://alice:{PASSWORD}@127.0.0.1:{acl_server.port}/0"
    sink = open_sink(url)
    assert sink.name == f"redis://alice:***@127.0.0.1:{acl_server.port}/0"
    sink.write_batch([trade(1), trade(2)])
    sink.close()
    assert uuids_in(acl_server) == [trade(1).uuid, trade(2).uuid]


def test_the_documented_least_privileges_cover_every_stream_key(acl_server: RedisServer) -> None:
    # docs/sinks.md: `ACL SETUSER coinfeed on >PASSWORD ~coinfeed:* +eval +xadd +zscore +zadd
    # +zremrangebyrank +wait +select`; an exchange rate's key holds its pair's "/"
    # (coinfeed:exrate:{BTC/USD}).
    with acl_server.client() as admin:
        admin.acl_setuser(
            "coinfeed", enabled=True, passwords=["+feed-pa55"], keys=["coinfeed:*"],
            commands=["+eval", "+xadd", "+zscore", "+zadd", "+zremrangebyrank", "+wait",
                      "+select"],
        )  # fmt: skip
    sink = open_sink(f"redis://coinfeed:feed-pa55@127.0.0.1:{acl_server.port}/1")
    sink.write_batch([trade(1), exrate("1.50")])
    sink.close()
    with redis.Redis(
        "127.0.0.1", acl_server.port, db=1, username="alice", password=PASSWORD
    ) as admin:
        [(_, fields)] = admin.xrange(stream("exrate", PAIR))
    assert decode_event(fields[b"json"]) == exrate("1.50")
    assert b'"rate":1.50,' in fields[b"json"]


def test_a_wrong_password_fails_the_write_without_showing_it(acl_server: RedisServer) -> None:
    wrong = "wr0ng-pa55word"
    sink = open_sink(f"redis://alice:{wrong}@127.0.0.1:{acl_server.port}/0")
    with pytest.raises(redis.AuthenticationError) as error:
        sink.write_batch([trade(1)])
    sink.close()
    assert wrong not in str(error.value) and wrong not in repr(error.value)
    assert wrong not in sink.name and "alice:***@" in sink.name
    assert uuids_in(acl_server) == []


def test_requirepass_takes_a_password_without_a_user(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="only-a-pa55")
    server.start()
    try:
        sink = open_sink(f"redis://:only-a-pa55@127.0.0.1:{server.port}/0")
        assert sink.name == f"redis://:***@127.0.0.1:{server.port}/0"
        sink.write_batch([trade(1)])
        sink.close()
        assert uuids_in(server) == [trade(1).uuid]
    finally:
        server.stop()


def test_rediss_verifies_the_server_with_redis_ca_file(
    tls_server: RedisServer, tls_files: TlsFiles
) -> None:
    assert tls_server.url == f"rediss://127.0.0.1:{tls_server.port}/0"
    sink = open_sink(tls_server.url, SinkOptions(redis_ca_file=str(tls_files.ca)))
    sink.write_batch([trade(1), trade(2)])
    sink.close()
    assert uuids_in(tls_server) == [trade(1).uuid, trade(2).uuid]


def test_rediss_without_the_ca_fails_certificate_verification(tls_server: RedisServer) -> None:
    sink = open_sink(tls_server.url)  # the system's CAs only: they never signed this server
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        sink.write_batch([trade(1)])
    sink.close()
    assert uuids_in(tls_server) == []


def test_rediss_checks_the_host_name(tmp_path: Path) -> None:
    files = TlsFiles.make(tmp_path, name="elsewhere", names="DNS:redis.elsewhere.example")
    server = RedisServer(tmp_path, tls=files)
    server.start()  # its certificate is valid, but for another name than 127.0.0.1
    try:
        sink = open_sink(server.url, SinkOptions(redis_ca_file=str(files.ca)))
        with pytest.raises(redis.ConnectionError, match="IP address mismatch"):
            sink.write_batch([trade(1)])
        sink.close()
    finally:
        server.stop()


def test_rediss_with_a_login(tmp_path: Path, tls_files: TlsFiles) -> None:
    server = RedisServer(tmp_path, user="alice", password=PASSWORD, tls=tls_files)
    server.start()
    try:
        assert server.url == f"rediss://alice:{PASSWORD}@127.0.0.1:{server.port}/0"
        sink = open_sink(server.url, SinkOptions(redis_ca_file=str(tls_files.ca)))
        assert sink.name == f"rediss://alice:***@127.0.0.1:{server.port}/0"
        sink.write_batch([trade(1)])
        sink.close()
        assert uuids_in(server) == [trade(1).uuid]
    finally:
        server.stop()
