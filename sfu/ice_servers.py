"""What a client gets in `joined.ice_servers`: the static STUN/TURN servers of the configuration,
plus TURN servers with short-lived credentials in coturn's `use-auth-secret` scheme (the "TURN REST
API": username `expiry:identity`, password base64(HMAC-SHA1(secret, username)))."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from sfu.config import Config


def turn_credentials(secret: str, identity: str, ttl_s: int, now_s: float | None = None) -> tuple[str, str]:
    """(username, password) that coturn with `static-auth-secret=secret` accepts until now + ttl_s."""
    expiry_s = int(now_s if now_s is not None else time.time()) + ttl_s
    username = f"{expiry_s}:{identity}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def client_ice_servers(config: Config, identity: str) -> list[dict[str, Any]]:
    servers = config.client_ice_servers()
    if config.turn.urls:
        username, password = turn_credentials(config.turn.secret, identity, config.turn.credential_ttl_s)
        servers.append({"urls": list(config.turn.urls), "username": username, "credential": password})
    return servers
