"""`sfu serve --workers 2`: rooms pinned to workers by name, media forwarded in rooms on both
workers, signaling and the admin API proxied (close codes included), a dead worker restarted,
SIGTERM → exit 0 with no worker left."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.error
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sfu.loadtest.procstat import process_tree
from sfu.server.ws_proxy import worker_for_room
from tests.conftest import ServerProcess, start_server
from tests.integration.peers import Participant, http_json, wait_until
from tests.ops.helpers import scrape

pytestmark = [pytest.mark.slow]

WORKERS = 2
ADMIN_KEY = "test-admin-key"
FORWARDED = "sfu_rtp_packets_forwarded_total"


def room_on(worker: int, prefix: str) -> str:
    """The first room name `prefix-i` that lives on `worker`."""
    return next(f"{prefix}-{i}" for i in range(1000) if worker_for_room(f"{prefix}-{i}", WORKERS) == worker)


def decoding_each_other(pair: list[Participant], min_frames: int = 10) -> bool:
    for me in pair:
        for other in pair:
            if other is me:
                continue
            for kind in ("audio", "video"):
                got = me.from_participant(other.client.participant_id or "", kind)
                if not got or got[0].frames < min_frames:
                    return False
    return True


def worker_pids(server: ServerProcess) -> list[int]:
    return process_tree(server.proc.pid)[1:]


def assert_stopped_cleanly(server: ServerProcess, pids: list[int]) -> None:
    code = server.stop()
    assert code == 0, f"server exited with {code}:\n{server.log()[-4000:]}"
    left = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not left, f"worker processes left behind: {left}"


async def test_media_flows_in_rooms_on_both_workers_and_sigterm_leaves_no_worker(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--workers", str(WORKERS))
    pids = worker_pids(server)
    rooms = [room_on(w, "media") for w in range(WORKERS)]
    pairs = {room: [Participant(server.url, room, f"{room}-a"), Participant(server.url, room, f"{room}-b")]
             for room in rooms}
    try:
        health = http_json(f"{server.url}/healthz")
        assert [w["worker"] for w in health["workers"]] == list(range(WORKERS))
        assert sorted(w["pid"] for w in health["workers"]) == sorted(pids), (health, pids)
        for pair in pairs.values():
            for participant in pair:
                await participant.join(video_size=(240, 160))
        assert await wait_until(lambda: all(decoding_each_other(p) for p in pairs.values()), 40), {
            room: [{tid: (r.kind, r.frames) for tid, r in p.received.items()} for p in pair]
            for room, pair in pairs.items()}
        health = http_json(f"{server.url}/healthz")
        assert [(w["rooms"], w["participants"]) for w in health["workers"]] == [(1, 2)] * WORKERS, health
        assert health["rooms"] == WORKERS and health["participants"] == 2 * WORKERS
        samples = scrape(server.url)
        for worker in range(WORKERS):
            assert samples.get(f'{FORWARDED}{{worker="{worker}"}}', 0) > 0, f"worker {worker} forwarded nothing"
            assert samples[f'sfu_worker_up{{worker="{worker}"}}'] == 1
    finally:
        for pair in pairs.values():
            for participant in pair:
                await participant.close()
        assert_stopped_cleanly(server, pids)


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    value: dict[str, Any] = json.loads(msg.data)
    return value


async def test_signaling_is_proxied_to_the_room_worker_and_a_dead_worker_is_restarted(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--workers", str(WORKERS), env={"SFU_ADMIN__API_KEY": ADMIN_KEY})
    pids = worker_pids(server)
    ws_url = server.ws_url
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with aiohttp.ClientSession() as session:
            # before a join: answered by worker 0; the join then moves the socket to its room's worker
            ws = await session.ws_connect(ws_url)
            await ws.send_str('{"v": 1, "type": "ping"}')
            await ws.send_str("not json")
            await ws.send_str(json.dumps({"v": 1, "type": "join", "room": room_on(1, "sig"), "name": "x"}))
            assert (await receive_json(ws))["type"] == "pong"
            assert (await receive_json(ws))["code"] == "bad_json"
            joined = await receive_json(ws)
            assert joined["type"] == "joined" and joined["room"] == room_on(1, "sig")
            health = http_json(f"{server.url}/healthz")
            assert [w["participants"] for w in health["workers"]] == [0, 1], health
            await ws.send_str(json.dumps({"v": 1, "type": "join", "room": room_on(0, "sig")}))
            assert (await receive_json(ws))["code"] == "wrong_state", "a second join stays on the first worker"
            await ws.send_str('{"v": 1, "type": "leave"}')
            closing = await asyncio.wait_for(ws.receive(), 10)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1000, closing

            # the admin API: rooms of all workers; a room's calls go to its worker; close codes pass
            removed = await session.ws_connect(ws_url)
            await removed.send_str(json.dumps({"v": 1, "type": "join", "room": room_on(0, "adm")}))
            participant = (await receive_json(removed))["participant"]["id"]
            async with session.get(f"{server.url}/admin/rooms", headers=admin) as response:
                listed = (await response.json())["rooms"]
            assert [(r["name"], r["worker"]) for r in listed] == [(room_on(0, "adm"), 0)], listed
            url = f"{server.url}/admin/rooms/{room_on(0, 'adm')}/participants/{participant}"
            async with session.delete(url, headers=admin) as response:
                assert response.status == 200, await response.text()
            closing = await asyncio.wait_for(removed.receive(), 10)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4001, closing
            assert closing.extra == "removed by the operator"

            # a worker that dies: its clients are closed (1011), it comes back, new joins work
            victim = await session.ws_connect(ws_url)
            await victim.send_str(json.dumps({"v": 1, "type": "join", "room": room_on(0, "dead")}))
            assert (await receive_json(victim))["type"] == "joined"
            worker0 = http_json(f"{server.url}/healthz")["workers"][0]["pid"]
            os.kill(worker0, signal.SIGKILL)
            closing = await asyncio.wait_for(victim.receive(), 10)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1011, closing

            def restarted() -> bool:
                try:
                    workers = http_json(f"{server.url}/healthz")["workers"]
                except urllib.error.HTTPError as exc:  # 503 while a worker is down
                    assert exc.code == 503
                    return False
                return bool(workers[0]["alive"] and workers[0]["restarts"] == 1 and workers[0]["pid"] != worker0)

            assert await wait_until(restarted, 15), server.log()[-3000:]
            again = await session.ws_connect(ws_url)
            await again.send_str(json.dumps({"v": 1, "type": "join", "room": room_on(0, "dead")}))
            assert (await receive_json(again))["type"] == "joined"
            await again.close()
        pids = worker_pids(server)
        assert "worker 0 (pid" in server.log() and "restarting" in server.log()
    finally:
        assert_stopped_cleanly(server, pids)
