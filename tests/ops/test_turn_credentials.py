"""TURN credentials in coturn's use-auth-secret scheme, handed out in `joined.ice_servers`."""

from __future__ import annotations

import base64
import hashlib
import hmac

from sfu.config import load_config
from sfu.ice_servers import client_ice_servers, turn_credentials


def test_credentials_follow_the_turn_rest_scheme() -> None:
    username, password = turn_credentials("north", "PA_1", ttl_s=600, now_s=1_700_000_000)
    assert username == "1700000600:PA_1"
    expected = base64.b64encode(hmac.new(b"north", b"1700000600:PA_1", hashlib.sha1).digest()).decode()
    assert password == expected


def test_joined_ice_servers_add_turn_with_fresh_credentials() -> None:
    config = load_config(None, {"ice": {"servers": [{"urls": ["stun:198.18.0.1:3478"]}]},
                                "turn": {"urls": ["turn:198.18.0.1:3478?transport=udp"], "secret": "north",
                                         "credential_ttl_s": 30}})
    servers = client_ice_servers(config, "alice")
    assert servers[0] == {"urls": ["stun:198.18.0.1:3478"]}
    assert servers[1]["urls"] == ["turn:198.18.0.1:3478?transport=udp"]
    assert servers[1]["username"].endswith(":alice")
    assert config.rtc_ice_servers()[0].urls == ["stun:198.18.0.1:3478"], "the server gathers without TURN"
