"""docs/protocol.md is the contract: every message type and error code the code knows is in it."""

from __future__ import annotations

import re
from pathlib import Path

from sfu.signaling.messages import VALIDATORS, ErrorCode

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()

SERVER_TYPES = ("joined", "participant_joined", "participant_left", "track_published", "track_unpublished",
                "track_muted", "track_unmuted", "draining", "offer", "answer", "error", "pong", "quality_changed",
                "layers_needed", "active_speakers")


def table_rows(heading: str) -> set[str]:
    section = DOC.split(heading, 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))


def test_every_client_message_type_is_documented_and_accepted() -> None:
    assert table_rows("## Client → server") == set(VALIDATORS)


def test_every_server_message_type_is_documented() -> None:
    assert table_rows("## Server → client") == set(SERVER_TYPES)


def test_every_error_code_is_documented() -> None:
    assert table_rows("## Error codes") == {str(code) for code in ErrorCode}


def test_server_emits_only_documented_types() -> None:
    sources = "\n".join(p.read_text() for p in (Path(__file__).resolve().parents[2] / "sfu").rglob("*.py"))
    emitted = set(re.findall(r'message\("([a-z_]+)"', sources))
    assert emitted <= set(SERVER_TYPES), emitted - set(SERVER_TYPES)
