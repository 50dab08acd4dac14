"""The playbook loads, covers every card kind, and fails loudly and precisely when broken."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from guidance.errors import PlaybookError
from guidance.playbook import (
    ALERT_KINDS,
    INTENT_CARD_KINDS,
    load_playbook,
    parse_playbook,
)
from server.guidance_cli import register

DEFAULT_TEXT = (Path(__file__).resolve().parents[1] / "guidance" / "playbook.yaml").read_text()


def _broken(edit: dict[str, object], path: tuple[str, ...]) -> str:
    data = yaml.safe_load(DEFAULT_TEXT)
    node = data
    for key in path[:-1]:
        node = node[key]
    if edit.get("delete"):
        del node[path[-1]]
    else:
        node[path[-1]] = edit["value"]
    return yaml.safe_dump(data)


def test_default_playbook_covers_every_kind() -> None:
    """The packaged playbook has a template for every intent and alert kind, with talk tracks."""
    playbook = load_playbook()
    for kind in (*INTENT_CARD_KINDS, *ALERT_KINDS):
        template = playbook.card(kind)
        assert template.title and 1 <= len(template.responses) <= 3


@pytest.mark.parametrize(
    "name",
    ["Salesforce", "HubSpot", "Gong", "Zoho", "Pipedrive", "Microsoft Dynamics", "salesforce"],
)
def test_default_battlecards(name: str) -> None:
    """Default competitors have battlecards, matched case-insensitively."""
    card = load_playbook().battlecard(name)
    assert card is not None and name.casefold() in card.title.casefold()


def test_question_topics_match_keywords() -> None:
    """A question mentioning onboarding gets the onboarding topic, an unrelated one none."""
    playbook = load_playbook()
    topic = playbook.topic_for("How long would onboarding take for 30 people?")
    assert topic is not None and topic.name == "onboarding"
    assert playbook.topic_for("Who else do you work with?") is None


@pytest.mark.parametrize(
    ("path", "edit", "expected"),
    [
        (("cards", "objection_price"), {"delete": True}, "cards.objection_price: Field required"),
        (("cards", "buying_signal", "priority"), {"value": "high"}, "cards.buying_signal.priority"),
        (("cards", "question", "responses"), {"value": []}, "cards.question.responses"),
        (("alerts", "monologue", "colour"), {"value": "red"}, "alerts.monologue.colour"),
        (("dynamics", "max_rep_talk_ratio"), {"value": 1.5}, "dynamics.max_rep_talk_ratio"),
        (("deck", "max_new_cards_per_minute"), {"value": 0}, "deck.max_new_cards_per_minute"),
        (("version",), {"value": 2}, "version"),
    ],
)
def test_broken_playbook_names_field(
    tmp_path: Path, path: tuple[str, ...], edit: dict[str, object], expected: str
) -> None:
    """A playbook with a bad field raises PlaybookError naming the file and the field path."""
    file = tmp_path / "mine.yaml"
    file.write_text(_broken(edit, path))
    with pytest.raises(PlaybookError) as info:
        load_playbook(file)
    assert str(file) in str(info.value)
    assert expected in str(info.value)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    """Broken YAML syntax is reported with the file and line number."""
    file = tmp_path / "bad.yaml"
    file.write_text("version: 1\ncards:\n  objection_price: [unclosed\n")
    with pytest.raises(PlaybookError, match=r"bad\.yaml: line \d+ column \d+: not valid YAML"):
        load_playbook(file)


def test_missing_file_and_non_mapping() -> None:
    """A missing file and a YAML scalar are clear PlaybookErrors, not tracebacks."""
    with pytest.raises(PlaybookError, match="cannot read"):
        load_playbook("/nonexistent/playbook.yaml")
    with pytest.raises(PlaybookError, match="top level must be a mapping"):
        parse_playbook("just a string", "x.yaml")


def test_check_playbook_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`check-playbook` exits 0 for the default and 2 with the error for a broken file."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["check-playbook"])
    assert args.handler(args) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\n")
    args = parser.parse_args(["check-playbook", str(bad)])
    assert args.handler(args) == 2
    assert "cards: Field required" in capsys.readouterr().err
