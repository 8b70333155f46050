"""Node: what the handlers of one server process share — configuration, rooms, the drain state,
webhooks, the announced-address map and the signaling session of every joined participant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sfu.config import Config
from sfu.room.room import Room, RoomRegistry
from sfu.rtc.announce import AddressMap
from sfu.server.drain import Drain
from sfu.server.webhooks import WebhookSender

if TYPE_CHECKING:
    from sfu.signaling.session import SignalingSession


@dataclass
class Node:
    config: Config
    rooms: RoomRegistry
    drain: Drain
    webhooks: WebhookSender | None
    address_map: AddressMap
    sessions: dict[str, SignalingSession] = field(default_factory=dict)  # by participant id

    @classmethod
    def create(cls, config: Config) -> Node:
        webhooks = WebhookSender(config.webhooks) if config.webhooks.urls else None
        node: Node
        rooms = RoomRegistry(config.max_participants, observer=lambda e, r, d: node.on_room_event(e, r, d),
                             max_subscriptions=config.rooms.max_subscriptions_per_participant)
        node = cls(config, rooms, Drain(rooms, config.server.drain_timeout_s), webhooks,
                   AddressMap(config.network.announced_ips))
        return node

    def on_room_event(self, event: str, room: Room, data: dict[str, Any]) -> None:
        if self.webhooks is not None:
            self.webhooks.emit(event, {"room": room.name, **data})
