"""Admin API: the key is required (401), a node without one has no admin API (404); listing,
removing and muting work on a live room; webhooks arrive signed, for joins and leaves."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import ServerProcess, free_port, start_server
from tests.integration.peers import Participant, wait_until
from tests.ops.helpers import http

pytestmark = [pytest.mark.slow]

API_KEY = "admin-key-for-tests"
HOOK_SECRET = "webhook-secret-for-tests"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class WebhookReceiver:
    """An aiohttp server on loopback that records what it is sent; the first delivery fails with
    500, so the sender's retry is exercised too."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.refused_once = False
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-SFU-Signature", ""), expected):
            self.bad_signatures += 1
            return web.Response(status=400)
        if not self.refused_once:
            self.refused_once = True
            return web.Response(status=500)
        self.events.append(json.loads(body))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


def admin(server: ServerProcess, method: str, path: str, body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[int, Any]:
    return http(method, f"{server.url}/admin/{path}", body, AUTH if headers is None else headers)


def video_frames(me: Participant, other: Participant) -> int:
    return sum(r.frames for r in me.from_participant(other.client.participant_id or "", "video"))


async def test_admin_api_lists_removes_and_mutes_and_webhooks_are_signed(tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    server = start_server(tmp_path, env={
        "SFU_ADMIN__API_KEY": API_KEY, "SFU_WEBHOOKS__URLS": json.dumps([f"http://127.0.0.1:{receiver.port}/hook"]),
        "SFU_WEBHOOKS__SECRET": HOOK_SECRET, "SFU_WEBHOOKS__INITIAL_BACKOFF_S": "0.2"})
    alice, bob = Participant(server.url, "ops", "alice"), Participant(server.url, "ops", "bob")
    try:
        assert admin(server, "GET", "rooms", headers={})[0] == 401
        assert admin(server, "GET", "rooms", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert admin(server, "POST", "drain", headers={})[0] == 401, "no drain without the key"
        for participant in (alice, bob):
            await participant.join(video_size=(240, 160))
        assert await wait_until(lambda: video_frames(bob, alice) > 10 and video_frames(alice, bob) > 10, 30)
        status, body = admin(server, "GET", "rooms")
        assert status == 200
        [room] = body["rooms"]
        assert room["name"] == "ops"
        listed = {p["name"]: p for p in room["participants"]}
        assert set(listed) == {"alice", "bob"}
        assert sorted(t["kind"] for t in listed["alice"]["tracks"]) == ["audio", "video"]
        alice_video = next(t for t in listed["alice"]["tracks"] if t["kind"] == "video")
        assert alice_video["muted"] is False
        # mute alice's camera: bob is told and stops getting frames; unmute brings them back
        told = bob.client.expect("track_muted")
        status, body = admin(server, "POST", f"rooms/ops/tracks/{alice_video['id']}/mute", {"muted": True})
        assert status == 200 and body["muted"] is True
        msg = await asyncio.wait_for(told, 5)
        assert (msg["track_id"], msg["participant_id"]) == (alice_video["id"], alice.client.participant_id)
        await asyncio.sleep(1.0)
        frozen = video_frames(bob, alice)
        await asyncio.sleep(1.5)
        assert video_frames(bob, alice) <= frozen + 2, "no video forwarded while muted"
        assert admin(server, "GET", "rooms/ops")[1]["participants"][0]["tracks"]
        told = bob.client.expect("track_unmuted")
        assert admin(server, "POST", f"rooms/ops/tracks/{alice_video['id']}/mute", {"muted": False})[0] == 200
        await asyncio.wait_for(told, 5)
        assert await wait_until(lambda: video_frames(bob, alice) > frozen + 10, 15), "video resumes after unmute"
        # remove bob: his socket closes with 4001, alice hears he left
        gone = alice.client.expect("participant_left")
        status, body = admin(server, "DELETE", f"rooms/ops/participants/{bob.client.participant_id}")
        assert status == 200
        assert (await asyncio.wait_for(gone, 5))["participant_id"] == bob.client.participant_id
        assert await wait_until(lambda: bob.client._ws is not None and bob.client._ws.closed, 5)
        assert bob.client._ws is not None and bob.client._ws.close_code == 4001
        assert [p["name"] for p in admin(server, "GET", "rooms/ops")[1]["participants"]] == ["alice"]
        assert admin(server, "DELETE", "rooms/ops/participants/PA_nobody")[0] == 404
        assert admin(server, "GET", "rooms/nowhere")[0] == 404
        # close the room: alice is removed too (4002), the room is gone
        assert admin(server, "DELETE", "rooms/ops")[0] == 200
        assert await wait_until(lambda: alice.client._ws is not None and alice.client._ws.closed, 5)
        assert alice.client._ws is not None and alice.client._ws.close_code == 4002
        assert admin(server, "GET", "rooms")[1] == {"rooms": []}
        # webhooks: signed, retried after the receiver's first 500, one per join and leave
        assert await wait_until(lambda: len(receiver.of("participant_left")) == 2 and receiver.of("room_finished"),
                                15), receiver.events
        assert receiver.bad_signatures == 0
        joined = receiver.of("participant_joined")
        assert sorted(e["participant"]["name"] for e in joined) == ["alice", "bob"]
        assert all(e["room"] == "ops" and e["participant"]["identity"] for e in joined)
        assert {e["participant"]["id"] for e in receiver.of("participant_left")} == \
            {alice.client.participant_id, bob.client.participant_id}
        assert len(receiver.of("room_started")) == 1
        assert len(receiver.of("track_published")) == 4 and len(receiver.of("track_unpublished")) == 4
        names = [e["event"] for e in receiver.events]
        assert names.index("room_started") < names.index("participant_joined") < names.index("room_finished")
    finally:
        await alice.close()
        await bob.close()
        assert server.stop() == 0, server.log()[-3000:]
        if receiver.runner is not None:
            await receiver.runner.cleanup()


def test_without_an_api_key_there_is_no_admin_api(sfu_server: ServerProcess) -> None:
    assert http("GET", f"{sfu_server.url}/admin/rooms", headers=AUTH)[0] == 404
    assert http("POST", f"{sfu_server.url}/admin/drain", headers=AUTH)[0] == 404
