"""The server's configuration: one typed object, every key documented in config/reference.toml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCIceServer


@dataclass
class IceServer:
    urls: list[str]
    username: str | None = None
    credential: str | None = None


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_participants: int = 50  # per room
    max_message_bytes: int = 256 * 1024  # one signaling message
    include_loopback_candidates: bool = True  # offer ICE host candidates on 127.0.0.1
    ice_servers: list[IceServer] = field(default_factory=list)  # handed to clients and used by the server
    log_level: str = "info"
    shutdown_timeout_s: float = 5.0
    debug_endpoints: bool = False  # /debug/objects: object counts for tests; costly, never in production

    def rtc_ice_servers(self) -> list[RTCIceServer]:
        """Explicit, so aiortc never falls back to its default public STUN server."""
        return [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                for s in self.ice_servers]

    def client_ice_servers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for server in self.ice_servers:
            entry: dict[str, Any] = {"urls": server.urls}
            if server.username is not None:
                entry["username"] = server.username
            if server.credential is not None:
                entry["credential"] = server.credential
            out.append(entry)
        return out
