"""The ``coinfeed`` command: ``run``, ``demo``, ``replay``, ``recordings``, ``book``, ``consume``,
``simulate``, ``config`` and ``shards``.

Every setting flag is generated from ``config.SETTINGS``. Flags default to "not given" so that
``load_settings`` can apply the precedence flags > environment > file > defaults. The service
(through :mod:`coinfeed.main`) and the simulator are imported only by the command that needs them.

Exit codes (docs/architecture.md): 0 clean stop, 1 unexpected failure, 2 invalid usage or
configuration, 3 CoinAPI rejected the key or subscription (returned by the service).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from loguru import logger

from coinfeed import __version__
from coinfeed.config import (
    API_KEY_ENV,
    CONFIG_ENV,
    DEBUG_TOKEN_ENV,
    SETTINGS,
    SETTINGS_BY_NAME,
    ConfigError,
    Settings,
    format_value,
    load_settings,
    unknown_environment,
)
from coinfeed.config.settings import STALE_AFTER_MIN
from coinfeed.core.events import EVENT_KINDS
from coinfeed.logs import redact, setup_logging
from coinfeed.sinks.open import redact_spec

DEMO_DEFAULTS: Mapping[str, object] = {
    "stats_interval": 5.0,
    "sinks": ("sqlite:coinfeed-demo.sqlite",),
}
DEMO_FAULTS: Mapping[str, str] = {
    "none": "a clean feed: books stay synced, /ready says ready",
    "gaps": "1 % of frames skipped: trade backfills, book resyncs (books often stale)",
    "chaos": "a little of every other fault, plus duplicated and reordered frames",
    "disconnects": "dropped connections and server reconnect requests",
    "stall": "the feed goes silent for 12 s: the watchdog reconnects",
    "malformed": "invalid and oversized frames, counted and skipped",
    "slow-rest": "REST answers 0.5-1.5 s late",
    "rest-429": "REST rate-limits in bursts (Retry-After)",
    "rest-5xx": "30 % of REST calls fail",
}
"""The simulator's fault profiles (coinfeed.simulator.faults.PROFILES, which a test keeps this in
step with), listed here so that building the parser does not import the simulator."""
REPLAY_DEFAULTS: Mapping[str, object] = {"http": "off"}
"""A replay runs next to the live service as often as not: it asks for a listener with --http."""
DEMO_DEFAULT_FAULTS = "none"
"""A newcomer's first run should look healthy; ``--faults chaos`` is the next step."""
DEMO_SEED = 7
"""Seed of the demo's simulated market: the same market on every run unless --seed says else."""
SETTINGS_HELP = (
    "Each setting NAME can also be set as NAME in the TOML file (--config) or as COINFEED_NAME in "
    "the environment; precedence is flags > environment > file > defaults. Lists are "
    f"comma-separated. The API key is read from {API_KEY_ENV} or api_key_file, never from argv."
)

Handler = Callable[[argparse.Namespace, list[str], Mapping[str, str]], int]


class _Parser(argparse.ArgumentParser):
    """argparse without prefix matching, whose error messages never show a secret."""

    def __init__(self, *args: Any, secrets: Sequence[str] = (), **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.secrets = tuple(secrets)

    def error(self, message: str) -> NoReturn:
        """Print usage and the (redacted) message, exit 2."""
        super().error(redact(message, self.secrets))


class _RefuseApiKey(argparse.Action):
    """``--api-key`` exists only to explain why it does not, without echoing the value."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        parser.error(
            "the API key is never read from the command line (it would show in ps and shell "
            f"history): set {API_KEY_ENV} or api_key_file"
        )


def add_setting_arguments(
    parser: argparse.ArgumentParser, *, defaults: Mapping[str, object] | None = None
) -> None:
    """Add one flag per setting (``--some-name``), with its default and env name in the help."""
    defaults = defaults or {}
    group = parser.add_argument_group("settings", SETTINGS_HELP)
    group.add_argument(
        "--config", metavar="FILE", default=None, help=f"TOML settings file (env {CONFIG_ENV})"
    )
    for setting in SETTINGS:
        default = format_value(defaults.get(setting.name, setting.default)) or "none"
        group.add_argument(
            *setting.aliases,  # the documented spelling first, e.g. --sink
            setting.flag,
            dest=setting.name,
            metavar=setting.metavar,
            action="append" if setting.repeatable else "store",
            default=argparse.SUPPRESS,
            help=f"{setting.help} (default: {default}; env {setting.env})",
        )
    group.add_argument("--api-key", nargs="?", action=_RefuseApiKey, help=argparse.SUPPRESS)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(item.strip() for item in text.split(",") if item.strip())
    unknown = [kind for kind in kinds if kind not in EVENT_KINDS]
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(
            f"expected event kinds among {','.join(EVENT_KINDS)}, got {text!r}"
        )
    return kinds


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a number > 0 or max, got {text!r}") from None


def _utc_time(text: str) -> datetime:
    """ISO 8601 (``2026-12-06T14:03:00Z``); a time without an offset is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an ISO 8601 time like 2026-12-06T14:03:00Z, got {text!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def build_parser(*, secrets: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The whole ``coinfeed`` command line."""
    parser = _Parser(
        prog="coinfeed",
        description="CoinAPI market-data feed handler: bounded, self-repairing, observable.",
        secrets=secrets,
    )
    parser.add_argument("--version", action="version", version=f"coinfeed {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, handler: Handler, summary: str, **options: Any
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=summary, secrets=secrets, **options
        )
        sub.set_defaults(handler=handler, parser=sub)
        return sub

    run = command("run", _run, "Stream CoinAPI market data to the configured sinks.")
    add_setting_arguments(run)

    # The profile table keeps its lines (the raw epilog); argument help is wrapped as usual.
    profiles = "\n".join(f"  {name:<12} {what}" for name, what in DEMO_FAULTS.items())
    demo = command(
        "demo",
        _demo,
        "Run the built-in simulator and `run` against it.",
        epilog=f"fault profiles (--faults):\n{profiles}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_setting_arguments(demo, defaults=DEMO_DEFAULTS)
    group = demo.add_argument_group("demo")
    group.add_argument("--rate", type=_positive_float, default=2000.0, metavar="FRAMES_PER_S",
                       help="frames per second the simulator sends (default: 2000)")  # fmt: skip
    group.add_argument("--faults", default=DEMO_DEFAULT_FAULTS, metavar="PROFILE",
                       help="simulator fault profile, one of those listed below "
                            f"(default: {DEMO_DEFAULT_FAULTS}; then try chaos)")  # fmt: skip
    group.add_argument("--seed", type=int, default=DEMO_SEED, metavar="INT",
                       help=f"seed of the simulated market (default: {DEMO_SEED})")  # fmt: skip

    replay = command(
        "replay",
        _replay,
        "Feed a recording (--record) through the processor to the sinks, with no connection.",
        epilog="The processor's own settings (symbols, types, dedup capacity, ...) are the "
        "recorded run's; sink and log settings are read as for run, and the HTTP listener is "
        "off unless --http asks for it.",
    )
    replay.add_argument("directory", metavar="DIR", help="the recording directory")
    group = replay.add_argument_group("replay")
    group.add_argument("--from", dest="start", type=_utc_time, metavar="TIME",
                       help="emit events from this time on (ISO 8601, UTC if no offset); the "
                            "processor starts at the segment holding it")  # fmt: skip
    group.add_argument("--to", dest="stop", type=_utc_time, metavar="TIME",
                       help="stop at the first batch recorded after this time")  # fmt: skip
    group.add_argument("--speed", type=_speed, default=None, metavar="N|max",
                       help="1 replays at the recorded pace, N times faster, max as fast as it "
                            "goes (default: max)")  # fmt: skip
    add_setting_arguments(replay, defaults=REPLAY_DEFAULTS)

    recordings = command(
        "recordings", _recordings, "List a recording's segments and check that they replay."
    )
    recordings.add_argument("directory", metavar="DIR", help="the recording directory")
    recordings.add_argument("--json", action="store_true", help="print JSON instead of a table")

    book = command(
        "book",
        _book,
        "Rebuild a symbol's L2 book at a time from a Parquet history (--sink parquet:DIR).",
        epilog="Needs the parquet extra (pip install 'coinfeed[parquet]').",
    )
    book.add_argument("directory", metavar="DIR", help="the parquet sink's directory")
    book.add_argument(
        "symbol_id", metavar="SYMBOL_ID", help="the symbol, e.g. BITSTAMP_SPOT_BTC_USD"
    )
    book.add_argument("--at", required=True, type=_utc_time, metavar="TIME",
                      help="the instant (ISO 8601, UTC if no offset): the book after the last "
                           "event received at or before it")  # fmt: skip
    book.add_argument("--depth", type=_positive_int, default=None, metavar="N",
                      help="levels per side (default: all)")  # fmt: skip
    book.add_argument("--json", action="store_true", help="print JSON instead of a table")

    consume = command(
        "consume",
        _consume,
        "Read coinfeed's Redis streams with a consumer group and write them to the sinks.",
        epilog="Each entry is acknowledged (XACK) only after every sink wrote it; entries a "
        "consumer left pending for --claim-idle seconds are claimed (XAUTOCLAIM) by another. "
        "--symbols narrows the streams (default: every stream found, looked for again every "
        "5 s); --sink names the sinks as for run (default: jsonl:- , stdout).",
    )
    consume.add_argument(
        "redis_url", metavar="REDIS_URL",
        help="redis://HOST:PORT/DB, rediss://..., redis+cluster://HOST:PORT[,...] or "
             "redis+sentinel://HOST:PORT[,...]/MASTER[/DB]",
    )  # fmt: skip
    group = consume.add_argument_group("consume")
    group.add_argument("--group", required=True, metavar="NAME",
                       help="the consumer group (created on each stream at its first entry, "
                            "reading from the oldest entry the stream holds)")  # fmt: skip
    group.add_argument("--consumer", metavar="NAME", default=None,
                       help="this consumer's name in the group (default: the host name; give "
                            "each consumer on one host its own)")  # fmt: skip
    group.add_argument("--kinds", type=_kinds, default=None, metavar="KIND,...",
                       help="event kinds to read (default: all: "
                            f"{','.join(EVENT_KINDS)})")  # fmt: skip
    group.add_argument("--count", type=_positive_int, default=500, metavar="N",
                       help="entries read per stream at a time (default: 500)")  # fmt: skip
    group.add_argument("--claim-idle", type=_positive_float, default=30.0, metavar="S",
                       help="seconds an entry may stay unacknowledged with another consumer "
                            "before this one claims it (default: 30); keep it above the "
                            "longest sink stall you expect")  # fmt: skip
    add_setting_arguments(consume)

    # Its options (and --help) belong to coinfeed.simulator.cli, parsed by _simulate.
    summary = "Run only the simulator (WebSocket + REST) on loopback."
    command("simulate", _simulate, summary, add_help=False)

    show = command("config", _config, "Print the effective settings (key redacted) and exit.")
    add_setting_arguments(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")

    shards = command(
        "shards", _shards, "Print which symbols each of COUNT replicas takes (--shard I/COUNT)."
    )
    shards.add_argument("--symbols", required=True, metavar="ID,...",
                        help="comma-separated symbol ids")  # fmt: skip
    shards.add_argument("--count", required=True, type=_positive_int, metavar="N",
                        help="number of replicas (shards)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``coinfeed`` command line and return its exit code."""
    env = dict(os.environ)
    secrets = [env.get(API_KEY_ENV, "").strip(), env.get(DEBUG_TOKEN_ENV, "").strip()]
    setup_logging("text", "INFO", secrets=secrets)
    parser = build_parser(secrets=secrets)
    try:
        args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
        if extra and args.command != "simulate":
            args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return int(args.handler(args, extra, env))
    except SystemExit as exit:  # argparse: --help, --version and usage errors
        return exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    except ConfigError as error:
        print(f"coinfeed: error: {redact(str(error), secrets)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception:
        logger.exception("coinfeed stopped by an unexpected error")
        return 1
    except BaseExceptionGroup as group:  # Ctrl-C leaving a nursery
        if group.split(KeyboardInterrupt)[1] is None:
            return 130
        raise


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _load(args: argparse.Namespace, env: Mapping[str, str], **options: Any) -> Settings:
    """Settings from the parsed flags and ``env``; logging set up from them."""
    cli: dict[str, object] = {"config": args.config}
    for setting in SETTINGS:
        value = getattr(args, setting.name, None)
        cli[setting.name] = ",".join(value) if isinstance(value, list) else value
    settings = load_settings(cli=cli, env=env, **options)
    _check_stale_after(settings, cli, env)
    secrets = [secret.reveal() for secret in (settings.api_key, settings.debug_token) if secret]
    setup_logging(settings.log_format, settings.log_level, secrets=secrets)
    for name, close in unknown_environment(env).items():
        logger.bind(variable=name, did_you_mean=close).warning("unknown variable ignored")
    return settings


def _check_stale_after(
    settings: Settings, cli: Mapping[str, object], env: Mapping[str, str]
) -> None:
    """Refuse a ``stale_after`` below :data:`STALE_AFTER_MIN` (see there why it is checked here,
    not by the setting's parser), naming the layer it came from like the parser errors do."""
    if settings.stale_after >= STALE_AFTER_MIN:
        return
    env_name = SETTINGS_BY_NAME["stale_after"].env
    if cli.get("stale_after") is not None:
        source = "the command line"
    elif env.get(env_name, "").strip():
        source = "the environment"
    else:
        source = f"the config file {settings.config_file}"
    raise ConfigError(
        "stale_after",
        f"must be at least {STALE_AFTER_MIN:g} second, got {settings.stale_after:g}: CoinAPI "
        "sends a heartbeat only after a second of silence, so a quiet feed would be "
        "reconnected over and over",
        source,
    )


def _run(args: argparse.Namespace, extra: list[str], env: Mapping[str, str]) -> int:
    settings = _load(args, env)
    entry = importlib.import_module("coinfeed.main")
    return int(entry.run_service(settings))


def _demo(args: argparse.Namespace, extra: list[str], env: Mapping[str, str]) -> int:
    if args.faults not in DEMO_FAULTS:
        # One line, not argparse's usage of every setting flag.
        print(
            f"coinfeed: error: argument --faults: unknown profile {args.faults!r}; choose one "
            f"of {', '.join(DEMO_FAULTS)} (default: {DEMO_DEFAULT_FAULTS})",
            file=sys.stderr,
        )
        return 2
    # symbols stay () unless given: run_demo then uses the simulator's symbols.
    settings = _load(args, env, require_symbols=False, require_key=False, defaults=DEMO_DEFAULTS)
    entry = importlib.import_module("coinfeed.main")
    return int(entry.run_demo(settings, rate=args.rate, faults=args.faults, seed=args.seed))


def _replay(args: argparse.Namespace, extra: list[str], env: Mapping[str, str]) -> int:
    settings = _load(args, env, require_symbols=False, require_key=False, defaults=REPLAY_DEFAULTS)
    if args.start is not None and args.stop is not None and args.stop < args.start:
        args.parser.error("--to must not be before --from")
    entry = importlib.import_module("coinfeed.main")
    return int(
        entry.run_replay(
            settings, args.directory, speed=args.speed, start=args.start, stop=args.stop
        )
    )


def _recordings(args: argparse.Namespace, extra: list[str], env: Mapping[str, str]) -> int:
    from coinfeed.recording.format import RecordingError
    from coinfeed.recording.listing import render, run_listing

    logger.disable("coinfeed")  # what replaying the segments logs is not the listing
    try:
        summaries = run_listing(args.directory)
    except (RecordingError, OSError) as error:
        print(f"coinfeed: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([summary.as_json() for summary in summaries], indent=2))
    else:
        print(render(summaries))
    return 1 if any(summary.error for summary in summaries) else 0


def _book(args: argparse.Namespace, extra: list[str], env: Mapping[str, str]) -> int:
    try:
        from coinfeed.sinks import parquet_history
    except ImportError as error:
        print(
            f"coinfeed: error: coinfeed book needs pyarrow ({error}): install the parquet "
            "extra, pip install 'coinfeed[parquet]'",
            file=sys.stderr,
        )
        return 2
    try:
        found = parquet_history.book_at(Path(args.directory), args.symbol_id, args.at, args.depth)
    except (parquet_history.HistoryError, OSError, ValueError) as error:
        # ValueError: pyarrow's ArrowInvalid, a file that is not Parquet.
        print(f"coinfeed: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(found.as_json(), indent=2))
    else:
        print(parquet_history.render(found))
    return 0


def _consume(args: argparse.Namespace, extra: list[str], env: Mapping[str, str]) -> int:
    from coinfeed.sinks.redis_url import parse_redis_url

    url = parse_redis_url(args.redis_url)
    if url is None:
        args.parser.error(
            f"argument REDIS_URL: not a Redis URL: {redact_spec(args.redis_url)!r} (expected "
            "redis://, rediss://, redis+cluster:// or redis+sentinel://)"
        )
    if not args.group.strip():
        args.parser.error("argument --group: the group needs a name")
    settings = _load(args, env, require_symbols=False, require_key=False)
    entry = importlib.import_module("coinfeed.consume")
    return int(
        entry.run_consume(
            settings, url, args.group, consumer=args.consumer,
            kinds=args.kinds or EVENT_KINDS, count=args.count, claim_idle=args.claim_idle,
        )
    )  # fmt: skip


def _simulate(args: argparse.Namespace, extra: list[str], env: Mapping[str, str]) -> int:
    try:
        simulator = importlib.import_module("coinfeed.simulator.cli")
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("coinfeed.simulator"):
            raise
        print(
            "coinfeed: error: the simulator (coinfeed.simulator.cli) is not available",
            file=sys.stderr,
        )
        return 1
    # The simulator parses its own options (and --help) and sets up its own logging.
    try:
        return int(simulator.main(list(extra)))
    except SystemExit as exit_:  # its argparse: --help (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else 2


def _config(args: argparse.Namespace, extra: list[str], env: Mapping[str, str]) -> int:
    settings = _load(args, env, require_symbols=False, require_key=False)
    values = settings.redacted()
    # What this replica subscribes, narrowed as `run` narrows it (a shard with no symbols exits
    # 2 here too). The symbols setting itself stays whole, so the TOML is accepted back with
    # the same meaning.
    subscribed = settings.symbols
    if settings.shard is not None and settings.symbols:
        from coinfeed.service import apply_shard

        subscribed = apply_shard(settings).symbols
    if args.json:
        print(json.dumps({**values, "subscribed_symbols": list(subscribed)}, indent=2))
    else:
        print(render_toml(values, subscribed=subscribed))
    return 0


def _shards(args: argparse.Namespace, extra: list[str], env: Mapping[str, str]) -> int:
    from coinfeed.core.shard import assign

    symbols = [item.strip() for item in args.symbols.split(",") if item.strip()]
    if not symbols:
        args.parser.error("--symbols: expected at least one symbol id, e.g. BITSTAMP_SPOT_BTC_USD")
    shards = assign(symbols, args.count)
    for index, members in enumerate(shards):
        print(f"{index}/{args.count}: {','.join(members)}")
    empty = [f"{index}/{args.count}" for index, members in enumerate(shards) if not members]
    if empty:  # a replica started with one of them exits 2 (no symbols to subscribe)
        print(
            f"coinfeed: warning: {args.count} shards for {len(symbols)} symbols: "
            f"{', '.join(empty)} get none, and a replica started with one of them exits 2; "
            "use fewer shards",
            file=sys.stderr,
        )
    return 0


def render_toml(values: Mapping[str, object], *, subscribed: Sequence[str] | None = None) -> str:
    """Effective settings as a TOML document that ``--config`` accepts back; with ``shard`` set,
    a comment after ``symbols`` lists ``subscribed``, the symbols this replica takes."""
    lines = ["# effective coinfeed settings (flags > environment > file > defaults)"]
    for setting in SETTINGS:
        value = values[setting.name]
        lines.append(f"# {setting.name} is not set" if value is None else
                     f"{setting.name} = {_toml_value(value)}")  # fmt: skip
        if setting.name == "symbols" and values["shard"] is not None and subscribed is not None:
            total = len(value) if isinstance(value, list) else 0
            lines.append(
                f"# shard {values['shard']} subscribes {len(subscribed)} of the {total} "
                f"symbols: {', '.join(subscribed)}"
            )
    if values["api_key"] is None:
        lines.append(f"# api_key is not set ({API_KEY_ENV} or api_key_file)")
    else:
        lines.append(f'# api_key = "***" (from {values["api_key_source"]})')
    lines.append(f"# config file: {values['config_file'] or 'none'}")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)
