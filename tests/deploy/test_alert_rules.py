"""The alerting rules: promtool accepts them, their unit tests pass, every alert is tested both
ways and links to a runbook section that exists."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import yaml

from tests.deploy.promserver import ALERT_TESTS, ALERTS, TROUBLESHOOTING, require_prometheus_binary


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_prometheus_binary("promtool"), *args], capture_output=True, text=True, timeout=60
    )


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown``."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = [
        case
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    for rule in alert_rules():
        name = rule["alert"]
        own = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in own), f"{name} is never tested firing"
        assert any(not case["exp_alerts"] for case in own), f"{name} is never tested quiet"


def test_every_alert_has_severity_summary_description_and_an_existing_runbook_section() -> None:
    anchors = heading_anchors(TROUBLESHOOTING.read_text())
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {"CoinfeedDisconnected", "CoinfeedNotReady", "CoinfeedFramesDropped",
            "CoinfeedGapsFrequent", "CoinfeedGapsUnrecovered", "CoinfeedRecoverySlow",
            "CoinfeedReconnectsFlapping", "CoinfeedMemoryHigh", "CoinfeedMemoryNearLimit",
            "CoinfeedQueueBacklog", "CoinfeedSinkFailing", "CoinfeedTargetDown",
            "CoinfeedTargetMissing", "CoinfeedSymbolsSilent"} <= names  # fmt: skip
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/troubleshooting.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {TROUBLESHOOTING}"


def test_troubleshooting_links_within_the_page_resolve() -> None:
    text = TROUBLESHOOTING.read_text()
    anchors = heading_anchors(text)
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links
    assert not [link for link in links if link not in anchors]
