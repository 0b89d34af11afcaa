"""Every setting, metric and fault profile the docs name exists.

"The docs" are README.md and docs/*.md. What counts as naming one, precisely:

- **metrics**: every ``coinfeed_…`` or ``process_…`` identifier anywhere in the text (code spans,
  code blocks and prose), and every name in the first column of a table headed ``metric``
  (written there without the ``coinfeed_`` prefix, with ``{labels}``), must be a family a running
  service exports on /metrics or one of its samples (``_total`` of a counter; ``_bucket``,
  ``_sum``, ``_count`` of a histogram). The table's type column must match the family's type.
- **settings**:
  - every code span in the first column of a table headed ``setting`` is a setting or one of
    its flag aliases (``--sink``);
  - in a section headed ``Settings`` (``### Settings``, ``### 9.6 Settings``), every code span
    spelled like a setting, ``lower_snake_case``, is a setting;
  - anywhere, ``COINFEED_NAME`` is the environment spelling of a setting, a code span
    ``name = value`` is a TOML setting, and a code span next to the word "setting" (``the
    `x` setting``, ``setting `x```) names a setting;
  - anywhere, also in CHANGELOG.md: a ``lower_snake_case`` code span ending like a setting
    (``_after``, ``_timeout``, ``_interval``, ``_capacity``, ``_limit``, ``_window``, ``_max``,
    …) is a setting, so an internal value is not presented as one;
  - in a ``coinfeed run|demo|config`` command (a code span or a line of a code block, with the
    indented lines that continue it), every ``--flag`` is a setting's flag or alias, or one of
    the command's own few flags.
- **fault profiles**: ``--faults NAME`` anywhere, and the code spans of the comma-separated list
  that follows a ``--faults …`` span and its ``(`` (```--faults chaos` (or `gaps`, …)``) or the
  word "profile(s)" and a ``:`` or ``(`` in the same sentence (``each other profile is one
  fault: `gaps` (remark), `stall`, …``), are profiles of ``coinfeed.simulator.faults.PROFILES``;
  and together they name every profile in the README.

The allowlists below are the few names that match a rule without being what it checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coinfeed.config import SETTINGS, Settings
from coinfeed.simulator.faults import PROFILES
from tests.fakes import FakeWebSocket
from tests.helpers import serving_fake_feed

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHANGELOG = ROOT / "CHANGELOG.md"

SETTING_NAMES = {setting.name for setting in SETTINGS}
SETTING_FLAGS = {flag for s in SETTINGS for flag in (s.flag, *s.aliases)}
SETTING_ENVS = {setting.env for setting in SETTINGS}

ENV_NOT_SETTINGS = {
    "COINFEED_CONFIG",  # the TOML file itself (--config)
    "COINFEED_DEBUG_TOKEN",  # a secret, read from the environment only
    "COINFEED_SOME_NAME",  # the naming rule's placeholder
    "COINFEED_PEER_BENCH",  # scripts/bench.py: where the peer benchmark is checked out
}
NOT_SETTINGS = {
    "some_name",  # the naming rule's placeholder
    "fail_under",  # pyproject's coverage bar (`fail_under = 85`), docs/ci.md
    "version",  # pyproject's `version = "X.Y.Z"`, docs/ci.md
    "fail_after",  # trio's
    "move_on_after",  # trio's
    "rss_percent_of_limit",  # a field of /api/debug/memory
}
COMMAND_FLAGS = {
    "run": {"--config", "--help"},
    "demo": {"--config", "--help", "--rate", "--faults", "--seed"},
    "config": {"--config", "--help", "--json"},
}
SETTING_SHAPED = re.compile(
    r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*_(?:after|timeout|interval|capacity|limit|window|max|maxlen"
    r"|concurrency|attempts|pause|fsync)"
)
SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")
METRIC = re.compile(r"(?<![\w/.-])((?:coinfeed|process)_[a-z0-9_]*[a-z0-9])\b")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", flags=re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"`([^`\n]+)`")


def prose(text: str) -> str:
    """``text`` with its fenced code blocks blanked out (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def code_blocks(text: str) -> list[str]:
    return [m.group(1) for m in FENCE.finditer(text)]


def spans(text: str) -> list[str]:
    """The inline code spans of ``text`` outside code blocks."""
    return SPAN.findall(prose(text))


def sections(text: str, title: re.Pattern[str]) -> Iterator[str]:
    """The bodies of the sections whose heading matches ``title``, to the next heading of the
    same or a higher level (a ``#`` line in a code block is no heading)."""
    text = prose(text)
    for match in re.finditer(r"^(#+) +(.+?) *$", text, flags=re.MULTILINE):
        if not title.fullmatch(match.group(2)):
            continue
        level = len(match.group(1))
        rest = text[match.end() :]
        end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
        yield rest[: end.start()] if end else rest


def table_rows(text: str, header: str) -> Iterator[list[str]]:
    """The cells of every row of the tables whose first header cell is ``header``."""
    inside = False
    for line in prose(text).splitlines():
        if not line.startswith("|"):
            inside = False
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not inside:
            inside = cells[0] == header
            continue
        if not set(cells[0]) <= set("-: "):
            yield cells


def commands(text: str, names: str) -> Iterator[tuple[str, str]]:
    """(subcommand, its text) for every ``coinfeed run|demo|config …`` in code spans and code
    blocks; in a block, indented lines after the command continue it."""
    pattern = re.compile(rf"\bcoinfeed ({names})\b(.*)")
    for span in spans(text):
        if match := pattern.search(span):
            yield match.group(1), match.group(2)
    for block in code_blocks(text):
        current: list[str] | None = None
        for line in block.splitlines():
            if current is not None and line.startswith((" ", "\t")):
                current[1] += " " + line
                continue
            if current is not None:
                yield current[0], current[1]
                current = None
            if match := pattern.search(line):
                current = [match.group(1), match.group(2)]
        if current is not None:
            yield current[0], current[1]


def where(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- metrics ---------------------------------------------------------------------------------


async def exported_families(make_settings: Callable[..., Settings]) -> dict[str, str]:
    """Family name -> type of what /metrics of a running service lists (labelled families
    without a sample yet are listed too, by their TYPE line)."""
    async with serving_fake_feed(make_settings, FakeWebSocket()) as (_service, client):
        text = (await client.get("/metrics")).text
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def metric_names(families: dict[str, str]) -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        name + suffix for name, kind in families.items() for suffix in ("", *suffixes.get(kind, ()))
    }


def documented_metrics(text: str) -> set[str]:
    return set(METRIC.findall(text))


def metric_table_entries(text: str) -> Iterator[tuple[str, str]]:
    """(full metric name, documented type) for each name in a ``metric`` table's first column."""
    for cells in table_rows(text, "metric"):
        for span in SPAN.findall(cells[0]):
            name = span.partition("{")[0]
            if not name.startswith("process_"):
                name = "coinfeed_" + name
            yield name, cells[1]


async def test_every_metric_the_docs_name_is_exported(
    make_settings: Callable[..., Settings],
) -> None:
    families = await exported_families(make_settings)
    exported = metric_names(families)
    assert {"coinfeed_ready", "coinfeed_gaps_detected_total", "process_resident_memory_bytes"} <= (
        exported
    )
    unknown = []
    for path in DOCS:
        text = path.read_text()
        unknown += [f"{where(path)}: {name}" for name in documented_metrics(text) - exported]
        for name, kind in metric_table_entries(text):
            if name not in exported:
                unknown.append(f"{where(path)} (metrics table): {name}")
                continue
            family = next(f for f in (name, name.removesuffix("_total")) if f in families)
            if families[family] != kind:
                unknown.append(f"{where(path)}: {name} is a {families[family]}, not a {kind}")
    assert not unknown, "documented metrics that /metrics does not export:\n" + "\n".join(unknown)


def test_the_metric_rules_see_the_metric_tables_and_names() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    table = dict(metric_table_entries(operations))
    assert table["coinfeed_gaps_detected_total"] == "counter"
    assert table["process_resident_memory_bytes"] == "gauge"
    assert "coinfeed_frames_dropped_total" in documented_metrics((ROOT / "README.md").read_text())
    # A bogus name is caught wherever it is written.
    assert documented_metrics("see `coinfeed_bogus_total{x}` and process_bogus.") == {
        "coinfeed_bogus_total",
        "process_bogus",
    }
    assert documented_metrics("`curl …/metrics | grep '^coinfeed_'` coinfeed/simulator") == set()


# -- settings --------------------------------------------------------------------------------


def named_settings(text: str) -> Iterator[tuple[str, str]]:
    """(rule, name) for every name ``text`` presents as a setting (see the module docstring;
    the setting-shaped rule is separate, it also covers the CHANGELOG)."""
    for cells in table_rows(text, "setting"):
        for span in SPAN.findall(cells[0]):
            yield "settings table", span
    for body in sections(text, re.compile(r"(?:[\d.]+ +)?Settings")):
        for span in spans(body):
            if SNAKE.fullmatch(span):
                yield "Settings section", span
    body = prose(text)
    for env in re.findall(r"\bCOINFEED_[A-Z0-9_]*[A-Z0-9]\b", text):
        if env not in ENV_NOT_SETTINGS:
            yield "environment name", env
    for span in spans(text):
        if match := re.fullmatch(r"([a-z][a-z0-9_]*) = \S+", span):  # not `a = b + c`
            yield "TOML assignment", match.group(1)
    for match in re.finditer(r"\bsetting `([^`]+)`|`([^`]+)` setting\b", body):
        yield "next to 'setting'", match.group(1) or match.group(2)
    for command, rest in commands(text, "run|demo|config"):
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
            if flag not in COMMAND_FLAGS[command]:
                yield f"coinfeed {command} flag", flag


def is_setting(name: str) -> bool:
    return (
        name in SETTING_NAMES
        or name in SETTING_FLAGS
        or name in SETTING_ENVS
        or name in NOT_SETTINGS
    )


def test_every_setting_the_docs_name_exists() -> None:
    unknown = [
        f"{where(path)} ({rule}): {name}"
        for path in DOCS
        for rule, name in named_settings(path.read_text())
        if not is_setting(name)
    ]
    assert not unknown, "documented settings that coinfeed.config.SETTINGS lacks:\n" + "\n".join(
        unknown
    )


def test_nothing_is_written_like_a_setting_that_is_not_one() -> None:
    unknown = [
        f"{where(path)}: `{span}`"
        for path in [*DOCS, CHANGELOG]
        for span in spans(path.read_text())
        if SETTING_SHAPED.fullmatch(span) and not is_setting(span)
        and not span.startswith(("coinfeed_", "process_"))
    ]  # fmt: skip
    assert not unknown, (
        "names spelled like settings that are not settings (say what they are in words, or "
        "add the setting):\n" + "\n".join(unknown)
    )


def test_the_setting_rules_catch_what_they_should() -> None:
    readme = set(named_settings((ROOT / "README.md").read_text()))
    assert {("settings table", "sink_stall_after"), ("coinfeed run flag", "--sink")} <= readme
    doc = (
        "## Settings\n\n`bogus_one` and `direct`\n\n| setting | default |\n|---|---|\n"
        "| `bogus_two` | 1 |\n\nSet `COINFEED_BOGUS_THREE`, `bogus_four = 1`, the "
        "`bogus_five` setting; not `a = b + c`.\n\n"
        "```\ncoinfeed run --symbols X\n    --bogus-six 1\n```\n"
    )
    found = {name for _, name in named_settings(doc) if not is_setting(name)}
    assert found == {
        "bogus_one", "bogus_two", "COINFEED_BOGUS_THREE", "bogus_four", "bogus_five",
        "--bogus-six",
    }  # fmt: skip
    assert SETTING_SHAPED.fullmatch("resync_timeout") and not is_setting("resync_timeout")


# -- fault profiles --------------------------------------------------------------------------


LIST_AFTER = re.compile(
    r"`--faults [^`]*`\s*\((?:or\s+)?"  # `--faults chaos` (or `gaps`, …)
    r"|\bprofiles?\b[^.`\n]{0,40}?[:(]\s*"  # profile (`none`, …) / each profile is …: `gaps`, …
)
LIST_ITEM = re.compile(
    r"(?:,\s*|\s+or\s+|\s+and\s+)?`([^`]+)`"  # a span, after a comma, "or" or "and"
    r"(?:\s*\((?:[^()]|\([^()]*\))*\))?"  # and a remark in parentheses, skipped
)


def span_list(text: str, start: int) -> Iterator[str]:
    """The code spans of the comma-separated list that begins at ``start``."""
    position = start
    while match := LIST_ITEM.match(text, position):
        yield match.group(1)
        position = match.end()


def named_profiles(text: str) -> Iterator[str]:
    for match in re.finditer(r"--faults[ =]([a-z0-9][a-z0-9-]*)", text):
        yield match.group(1)
    body = prose(text)
    for match in LIST_AFTER.finditer(body):
        yield from span_list(body, match.end())


def test_every_fault_profile_the_docs_name_exists() -> None:
    unknown = [
        f"{where(path)}: {name}"
        for path in DOCS
        for name in named_profiles(path.read_text())
        if name not in PROFILES
    ]
    assert not unknown, "documented fault profiles the simulator lacks:\n" + "\n".join(unknown)


def test_the_readme_names_every_fault_profile() -> None:
    listed = set(named_profiles((ROOT / "README.md").read_text()))
    assert set(PROFILES) <= listed, f"the README's profile list leaves out {set(PROFILES) - listed}"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Try `--faults chaos` (or `gaps`, `bogus`), `--rate 1`", ["chaos", "gaps", "bogus"]),
        (
            "each other profile is one fault: `gaps` (books `stale`), `bogus`,\n`x-y` (`a`). `z`",
            ["gaps", "bogus", "x-y"],
        ),
        ("(profile headline: with `direct`)", []),
        ("| `--faults` | `chaos` | simulator profile (`none`, `bogus`, …) |", ["none", "bogus"]),
        ("```\nsoak.py --faults bogus --out x\n```\n", ["bogus"]),
        ("`demo` defaults: `--rate 2000`, `--faults gaps`", ["gaps"]),
    ],
)
def test_the_profile_rules_catch_what_they_should(text: str, names: list[str]) -> None:
    assert sorted(named_profiles(text)) == sorted(names)
