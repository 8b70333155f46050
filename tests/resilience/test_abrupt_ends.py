"""Abrupt ends at every stage: a participant whose WebSocket closes without `leave`, or whose
process is SIGKILLed, during the join, the offer/answer, ICE, DTLS or while media flows. Each time
the server cleans up completely (the participant is gone, its peer connection closed, no task, fd
or UDP socket left: /debug/objects and /proc before and after) and the others are told."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from sfu.client import SfuClient
from tests.conftest import ROOT, ServerProcess, start_server
from tests.integration.peers import http_json, wait_until
from tests.resilience.abrupt_client import STAGES
from tests.resilience.churn import udp_sockets

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("abrupt"))
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()[-3000:]


def resources(server: ServerProcess) -> dict[str, int]:
    objects = http_json(f"{server.url}/debug/objects")
    return {"tasks": objects["tasks"], "fds": objects["open_fds"], "peer_connections": objects["peer_connections"],
            "udp_sockets": udp_sockets(server.proc.pid),
            "participants": http_json(f"{server.url}/healthz")["participants"]}


def spawn(server: ServerProcess, room: str, stage: str, end: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.resilience.abrupt_client", server.url, room, stage,
                             "--end", end], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("REACHED"):
            return proc, line.split()[1]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the client never reached stage {stage}")


@pytest.mark.parametrize("end", ["ws_close", "sigkill"])
@pytest.mark.parametrize("stage", list(STAGES))
async def test_a_participant_gone_abruptly_is_cleaned_up_and_the_others_are_told(
        server: ServerProcess, stage: str, end: str) -> None:
    room = f"abrupt-{stage}-{end}"
    observer = SfuClient(server.url, room, "observer", auto_subscribe=False)
    await observer.connect()
    proc: subprocess.Popen[str] | None = None
    try:
        await asyncio.sleep(0.5)
        before = resources(server)
        proc, participant_id = await asyncio.to_thread(spawn, server, room, stage, end)
        if end == "sigkill":
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if participant_id != "-":
            await observer.wait_for("participant_left", 15, lambda m: m["participant_id"] == participant_id)
        settled = await wait_until(lambda: all(v <= before[k] for k, v in resources(server).items()), 15, 0.3)
        after = resources(server)
        assert settled, f"{STAGES[stage]}: before {before}, after {after}"
        def joined() -> list[str]:
            return [m["participant"]["id"] for m in observer.messages if m["type"] == "participant_joined"]

        def left() -> list[str]:
            return [m["participant_id"] for m in observer.messages if m["type"] == "participant_left"]

        # the server's resources settle before its last message has necessarily reached the observer
        assert await wait_until(lambda: joined() == left(), 10, 0.1), "everyone who joined was announced as gone"
        published = {m["track"]["id"] for m in observer.messages
                     if m["type"] == "track_published" and m["track"]["participant_id"] == participant_id}
        unpublished = {m["track_id"] for m in observer.messages if m["type"] == "track_unpublished"}
        if stage == "media":
            assert len(published) == 2, "the participant published audio and video before it vanished"
        assert published <= unpublished, "the tracks of the participant who vanished did not end for the others"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        await observer.close()
