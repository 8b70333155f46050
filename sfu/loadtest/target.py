"""What the load runner needs from a server under test (ours or Janus), and shared client helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import aioice.ice
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection

from .media import PreEncodedVideoTrack, honour_keyframe_requests
from .probes import LiteSubscriber, SendTimes


@dataclass
class PublisherHandle:
    name: str
    room: str
    feed_id: Any  # Janus feed id, or our participant id
    send_times: SendTimes
    tracks: list[MediaStreamTrack]
    close: Callable[[], Awaitable[None]]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SubscriberHandle:
    name: str
    probe: LiteSubscriber
    peer_connections: int
    close: Callable[[], Awaitable[None]]


class Target(Protocol):
    """A server under load. ``server_pid`` is the root of the process tree whose CPU is measured."""

    name: str
    server_pid: int | None
    metrics_url: str | None
    client_address: str  # the only local address the load clients gather ICE candidates on

    async def start(self) -> None: ...

    async def create_room(self, index: int) -> str: ...

    async def add_publisher(
        self, room: str, name: str, tracks: list[MediaStreamTrack], send_times: SendTimes
    ) -> PublisherHandle: ...

    async def add_subscriber(
        self,
        room: str,
        name: str,
        publishers: list[PublisherHandle],
        probe: LiteSubscriber,
        receiver_reports: bool,
    ) -> SubscriberHandle: ...

    async def stop(self) -> None: ...


def new_peer_connection() -> RTCPeerConnection:
    """A peer connection that never contacts a public STUN server."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def instrument_publisher(pc: RTCPeerConnection, send_times: SendTimes) -> None:
    """Record send times of the pre-encoded video senders and let PLIs jump to a keyframe."""
    for transceiver in pc.getTransceivers():
        track = transceiver.sender.track
        if isinstance(track, PreEncodedVideoTrack):
            send_times.attach(transceiver.sender)
            honour_keyframe_requests(transceiver.sender, track)


@contextmanager
def host_addresses(addresses: list[str]) -> Iterator[None]:
    """Make aioice gather host candidates only on ``addresses`` (loopback or our veth).

    aioice skips 127.0.0.1 and would otherwise offer every interface of the machine; the load
    clients must stay on loopback or the namespace link. The patch is process-wide, for the
    duration of one load run.
    """
    original = aioice.ice.get_host_addresses

    def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return list(addresses)

    aioice.ice.get_host_addresses = _get_host_addresses
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original
