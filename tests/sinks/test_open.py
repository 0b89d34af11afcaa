"""Sink specs and opening sinks: unusable specs are clear errors and leave nothing open, and a
Redis password is kept to connect with but shown nowhere."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from coinfeed.config import Settings
from coinfeed.sinks import SinkOptions, SinkSpecError, open_sinks, parse_sink_spec
from coinfeed.sinks.redis_streams import RedisStreamSink


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("spec", ["jsonl:/nonexistent/dir/x.jsonl", "sqlite:/nonexistent/dir/x.db"])
def test_a_sink_that_cannot_be_opened_names_itself(spec: str) -> None:
    with pytest.raises(SinkSpecError, match="cannot be opened") as error:
        open_sinks([spec])
    assert spec in str(error.value)


def test_when_one_sink_fails_the_ones_already_opened_are_closed(tmp_path: Path) -> None:
    gc.collect()
    before = open_fds()
    specs = [f"jsonl:{tmp_path / 'a.jsonl'}", f"sqlite:{tmp_path / 'b.db'}", "jsonl:/nonexistent/c"]
    with pytest.raises(SinkSpecError):
        open_sinks(specs)
    assert open_fds() == before


@pytest.mark.parametrize(
    ("text", "unredacted", "shown"),
    [
        ("redis://localhost", "redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("rediss://redis.example.com", "rediss://redis.example.com:6379/0",
         "rediss://redis.example.com:6379/0"),
        ("redis://alice:s3cret@localhost/2", "redis://alice:s3cret@localhost:6379/2",
         "redis://alice:***@localhost:6379/2"),
        ("rediss://alice:s3cret@[::1]:6380", "rediss://alice:s3cret@[::1]:6380/0",
         "rediss://alice:***@[::1]:6380/0"),
        ("redis://:s3cret@h:7000/1", "redis://:s3cret@h:7000/1", "redis://:***@h:7000/1"),
        ("redis://alice@h", "redis://alice@h:6379/0", "redis://alice@h:6379/0"),
        ("redis://alice:@h", "redis://alice@h:6379/0", "redis://alice@h:6379/0"),
        # Percent-encoding is made uniform; a raw '@' in the password is taken as redis-py does.
        ("redis://al%69ce:p%40ss@h", "redis://alice:p%40ss@h:6379/0", "redis://alice:***@h:6379/0"),
        ("redis://alice:p@ss*w@h", "redis://alice:p%40ss%2Aw@h:6379/0",
         "redis://alice:***@h:6379/0"),
        ("redis://a%3Ab:***@h", "redis://a%3Ab:%2A%2A%2A@h:6379/0", "redis://a%3Ab:***@h:6379/0"),
        # A cluster by some of its nodes (database 0 only); Sentinels with the primary's name.
        ("redis+cluster://alice:s3cret@n1:7000,n2,[::1]:7002",
         "redis+cluster://alice:s3cret@n1:7000,n2:6379,[::1]:7002",
         "redis+cluster://alice:***@n1:7000,n2:6379,[::1]:7002"),
        ("redis+cluster://n1:7000/0", "redis+cluster://n1:7000", "redis+cluster://n1:7000"),
        ("redis+sentinel://:s3cret@s1,s2:5000/main", "redis+sentinel://:s3cret@s1:26379,s2:5000/main/0",
         "redis+sentinel://:***@s1:26379,s2:5000/main/0"),
        ("redis+sentinel://s1:26379/feed%2Done/3", "redis+sentinel://s1:26379/feed-one/3",
         "redis+sentinel://s1:26379/feed-one/3"),
    ],
)  # fmt: skip
def test_redis_urls_keep_their_login_and_show_no_password(
    text: str, unredacted: str, shown: str
) -> None:
    spec = parse_sink_spec(text)
    assert spec.kind == "redis"
    assert spec.unredacted == unredacted
    assert str(spec) == shown
    assert parse_sink_spec(spec.unredacted) == spec  # the settings' text opens the same sink
    assert "s3cret" not in repr(spec) and "s3cret" not in str(spec)


@pytest.mark.parametrize("spec", ["jsonl:-", "jsonl:events.jsonl", "sqlite:x.db"])
def test_file_specs_have_nothing_to_hide(spec: str) -> None:
    assert str(parse_sink_spec(spec)) == parse_sink_spec(spec).unredacted == spec


@pytest.mark.parametrize(
    "text",
    [
        "redis://alice:s3cret@h/x",
        "redis://alice:s3cret@h:99999/0",
        "redis://alice:s3cret@h:port/0",
        "rediss://alice:s3cret@h/0?ssl_cert_reqs=none",
        "redis://alice:s3cret@h/0#x",
        "redis://alice:s3cret@/0",
        "redis://alice:s3c/r3t@h/0",
        "redis://alice:s3c@r3t@",
        "redis+sentinel://alice:s3cret@h/0",  # a database where the primary's name goes
        "redis+sentinel://alice:s3cret@h",
        "redis+sentinel://alice:s3cret@h/main/x",
        "redis+cluster://alice:s3cret@h:7000/1",  # a cluster has only database 0
        "redis+cluster://alice:s3cret@h:7000,",
        "redis://alice:s3cret@h1,h2/0",  # one server has one address
        "redis+unix://alice:s3cret@h/0",
    ],
)
def test_an_unusable_url_is_refused_without_echoing_its_password(text: str) -> None:
    with pytest.raises(SinkSpecError, match="unknown sink") as error:
        parse_sink_spec(text)
    assert "s3c" not in str(error.value) and "r3t" not in str(error.value)
    assert "alice:***@" in str(error.value)


def test_settings_keep_the_password_for_the_sink_and_print_it_nowhere() -> None:
    settings = Settings(sinks=("redis://alice:s3cret@127.0.0.1:1/0", "jsonl:-"))
    assert settings.sinks == ("redis://alice:s3cret@127.0.0.1:1/0", "jsonl:-")
    assert settings.redacted()["sinks"] == ["redis://alice:***@127.0.0.1:1/0", "jsonl:-"]
    sinks = open_sinks(settings.sinks)  # Redis connects on the first write: nothing listens
    try:
        redis_sink = sinks[0]
        assert isinstance(redis_sink, RedisStreamSink)
        assert redis_sink.name == "redis://alice:***@127.0.0.1:1/0"
        kwargs = redis_sink.client.connection_pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"]) == ("alice", "s3cret")
    finally:
        for sink in sinks:
            sink.close()


def test_rediss_gets_the_ca_file_and_verifies_the_host_name(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    [sink] = open_sinks(["rediss://h:6380/1"], SinkOptions(redis_ca_file=str(ca)))
    assert isinstance(sink, RedisStreamSink)
    kwargs = sink.client.connection_pool.connection_kwargs
    sink.close()
    assert kwargs["ssl_ca_certs"] == str(ca)
    assert kwargs["ssl_check_hostname"] is True and kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["socket_timeout"] <= 2.0 and kwargs["socket_connect_timeout"] <= 2.0
