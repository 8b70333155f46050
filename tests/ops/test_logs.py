"""--log-json: every log line is one JSON object; joins, leaves and client errors carry the room
and participant ids."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sfu.client import SfuClient
from tests.conftest import start_server

pytestmark = [pytest.mark.slow]


async def test_json_log_lines_name_room_and_participant(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--log-json")
    client = SfuClient(server.url, "logged", "alice")
    try:
        await client.connect()
        error = client.expect("error")
        await client.send("teleport")
        await asyncio.wait_for(error, 5)
        await client.close()
        await asyncio.sleep(0.5)
    finally:
        await client.close()
        assert server.stop() == 0
    entries = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in entries)
    by_event = {entry["event"]: entry for entry in entries if "event" in entry}
    for event in ("join", "leave", "error"):
        assert by_event[event]["room"] == "logged", event
        assert by_event[event]["participant"] == client.participant_id, event
    assert by_event["error"]["code"] == "unknown_type"
    assert any("DEV MODE" in entry["msg"] and entry["level"] == "warning" for entry in entries)
