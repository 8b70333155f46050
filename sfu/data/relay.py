"""DataRelay: each participant's two data channels (reliable: ordered; lossy: unordered, no
retransmission) terminate at the server, which relays every message to the other participants of
the room (or the identities it names) on the same kind of channel, with the sender's id attached.
docs/protocol.md ("Data channels") documents the envelope."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiortc import RTCDataChannel

if TYPE_CHECKING:
    from sfu.room.participant import Participant

log = logging.getLogger(__name__)

RELIABLE, LOSSY = "sfu-reliable", "sfu-lossy"
MAX_MESSAGE_BYTES = 64 * 1024  # one data message, either kind
RATE_PER_S = 100.0  # messages per second per participant, sustained...
BURST = 200  # ...with this burst
MAX_BUFFERED_BYTES = 4 * 1024 * 1024  # a recipient that does not read: further messages to it are dropped


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float = 0.0
    last_s: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last_s) * self.rate_per_s)
        self.last_s = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


ErrorSink = Callable[[str, str], None]  # (error code, message) to the sender


@dataclass
class DataEndpoint:
    """One participant's channels and limits."""

    participant_id: str
    channels: dict[str, RTCDataChannel] = field(default_factory=dict)
    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(RATE_PER_S, BURST))
    received: int = 0
    dropped: int = 0


class DataRelay:
    """Relays for the participants of one room; the room owns it."""

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self.endpoints: dict[str, DataEndpoint] = {}

    def attach(self, participant: Participant, channel: RTCDataChannel, on_error: ErrorSink) -> None:
        if channel.label not in (RELIABLE, LOSSY):
            log.info("participant %s opened an unknown data channel %r: ignored", participant.id, channel.label)
            return
        endpoint = self.endpoints.setdefault(participant.id, DataEndpoint(participant.id))
        endpoint.channels[channel.label] = channel

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            self._relay(participant, endpoint, channel.label, message, on_error)

    def detach(self, participant_id: str) -> None:
        self.endpoints.pop(participant_id, None)

    def _relay(self, sender: Participant, endpoint: DataEndpoint, label: str, message: str | bytes,
               on_error: ErrorSink) -> None:
        endpoint.received += 1
        size = len(message.encode() if isinstance(message, str) else message)
        if size > self.max_message_bytes:
            on_error("data_too_large", f"a data message is limited to {self.max_message_bytes} bytes")
            return
        if not endpoint.bucket.take():
            endpoint.dropped += 1
            if endpoint.dropped % 100 == 1:  # one error per burst of drops, not one per message
                on_error("data_rate_limited", f"more than {RATE_PER_S:.0f} data messages per second")
            return
        if not sender.can_publish:
            on_error("forbidden", "publishing data needs the publish grant")
            return
        recipients: list[str] | None = None
        if isinstance(message, str):
            try:
                envelope = json.loads(message)
                data: Any = envelope["data"]
                to = envelope.get("to")
                if to is not None and (not isinstance(to, list) or not all(isinstance(i, str) for i in to)):
                    raise ValueError("'to' must be a list of participant ids")
                recipients = to
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                on_error("bad_message", f"a text data message must be JSON with 'data' (and optional 'to'): {exc}")
                return
            out: str | bytes = json.dumps({"from": sender.id, "data": data})
        else:
            sender_id = sender.id.encode()
            out = bytes([len(sender_id)]) + sender_id + message
        for participant_id, other in list(self.endpoints.items()):
            if participant_id == sender.id or (recipients is not None and participant_id not in recipients):
                continue
            channel = other.channels.get(label)
            if channel is None or channel.readyState != "open":
                continue
            if channel.bufferedAmount > MAX_BUFFERED_BYTES:
                other.dropped += 1
                continue
            channel.send(out)
