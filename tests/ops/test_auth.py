"""JWT access tokens: a valid token joins its room with its grants; another room, an expired,
forged or missing token, and publishing without the grant each get their error code."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from sfu.auth import mint_token, verify_token
from sfu.client import SfuClient
from sfu.signaling.messages import ErrorCode, SignalingError
from tests.conftest import ROOT, start_server
from tests.integration.peers import Participant, PatternVideo, wait_until
from tests.ops.helpers import join_error, open_socket

SECRET = "test-jwt-secret-of-some-length-0123456789"


def test_minted_token_carries_the_grants() -> None:
    token = mint_token(SECRET, "room-a", "alice", name="Alice", ttl_s=60, can_publish=False)
    grant = verify_token(SECRET, token)
    assert (grant.room, grant.identity, grant.name) == ("room-a", "alice", "Alice")
    assert not grant.can_publish and grant.can_subscribe


@pytest.mark.parametrize(("token", "code"), [
    (mint_token(SECRET, "r", "bob", now_s=time.time() - 3600, ttl_s=60), ErrorCode.TOKEN_EXPIRED),
    (mint_token("another-secret-of-some-length-0123456789", "r", "bob"), ErrorCode.UNAUTHORIZED),
    (mint_token(SECRET, "r", "bob")[:-4] + "AAAA", ErrorCode.UNAUTHORIZED),
    ("not.a.jwt", ErrorCode.UNAUTHORIZED),
    (jwt.encode({"sub": "bob", "room": "r", "exp": int(time.time()) + 60}, SECRET + SECRET, algorithm="HS512"),
     ErrorCode.UNAUTHORIZED),
])
def test_bad_tokens_get_their_code(token: str, code: ErrorCode) -> None:
    with pytest.raises(SignalingError) as info:
        verify_token(SECRET, token)
    assert info.value.code == code


def test_sfu_token_prints_a_token_that_verifies() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sfu", "token", "--room", "standup", "--identity", "carol", "--name", "Carol",
         "--ttl", "120", "--no-publish"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, env={**os.environ, "SFU_AUTH__JWT_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    grant = verify_token(SECRET, result.stdout.strip())
    assert (grant.room, grant.identity, grant.name, grant.can_publish) == ("standup", "carol", "Carol", False)
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert 110 <= claims["exp"] - time.time() <= 121


def test_sfu_token_without_a_secret_fails() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SFU_AUTH__JWT_SECRET"}
    result = subprocess.run([sys.executable, "-m", "sfu", "token", "--room", "r", "--identity", "i"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2 and "auth.jwt_secret" in result.stderr


@pytest.mark.slow
async def test_tokens_open_only_their_room_and_grant_only_what_they_say(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--no-dev-mode", env={"SFU_AUTH__JWT_SECRET": SECRET})
    alice = Participant(server.url, "room-a", "alice")
    alice.client.token = mint_token(SECRET, "room-a", "alice", name="Alice")
    viewer = Participant(server.url, "room-a", "viewer")
    viewer.client.token = mint_token(SECRET, "room-a", "viewer", can_publish=False)
    probes = [SfuClient(server.url, "room-a", f"probe{i}") for i in range(5)]
    try:
        joined = await alice.client.connect([(PatternVideo(160, 120), "camera")])
        assert joined["participant"]["name"] == "Alice", "the token's name wins"
        for probe in probes:
            await open_socket(probe)
        other_room = mint_token(SECRET, "room-a", "mallory")
        assert (await join_error(probes[0], "room-b", other_room))["code"] == "forbidden"
        assert (await join_error(probes[1], "room-a"))["code"] == "unauthorized"
        expired = mint_token(SECRET, "room-a", "mallory", now_s=time.time() - 7200, ttl_s=60)
        assert (await join_error(probes[2], "room-a", expired))["code"] == "token_expired"
        forged = mint_token("someone-elses-secret-0123456789-abcdef", "room-a", "mallory")
        assert (await join_error(probes[3], "room-a", forged))["code"] == "unauthorized"
        header, claims, signature = mint_token(SECRET, "room-b", "mallory").split(".")
        swapped = f"{header}.{other_room.split('.')[1]}.{signature}"  # room-a claims, room-b signature
        assert (await join_error(probes[4], "room-a", swapped))["code"] == "unauthorized"
        # a subscribe-only token receives, but its offer to publish is refused
        await viewer.client.connect()
        assert await wait_until(lambda: any(r.frames > 5 for r in viewer.received.values()), 20), \
            "the subscribe-only participant receives video"
        answers_before = sum(m["type"] == "answer" for m in viewer.client.messages)
        refused = viewer.client.expect("error", lambda m: m["code"] == "forbidden")
        publish = asyncio.ensure_future(viewer.client.publish(PatternVideo(160, 120), "camera"))
        assert "publishing" in (await asyncio.wait_for(refused, 10))["message"]
        publish.cancel()
        await asyncio.sleep(0.5)
        own = [t for t in viewer.client.tracks.values() if t["participant_id"] == viewer.client.participant_id]
        assert own == [], "nothing was published"
        assert sum(m["type"] == "answer" for m in viewer.client.messages) == answers_before, "offer not answered"
    finally:
        for probe in probes:
            await probe.close()
        await viewer.close()
        await alice.close()
        assert server.stop() == 0, server.log()[-3000:]
