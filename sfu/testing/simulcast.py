"""A synthetic simulcast publisher for tests and load generation: one video track sent as three
VP8 layers (rid q/h/f) on three SSRCs from an aiortc client, as a browser does with
`sendEncodings`. aiortc cannot send simulcast, so this writes the layers' RTP itself through the
client's DTLS transport and answers PLIs per layer."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCRtpTransceiver, clock
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpSendParameters
from aiortc.rtp import RTCP_PSFB_PLI, HeaderExtensionsMap, RtcpPacket, RtcpPsfbPacket, RtpPacket
from av import VideoFrame

from sfu.client import SfuClient
from sfu.rtc.peer import PlaceholderTrack
from sfu.rtc.sdp import URI_ABS_SEND_TIME, URI_MID, URI_RID

VIDEO_CLOCK = 90000
RID_EXT_ID = 10  # an id aiortc never uses; the server echoes it in its answer
DEFAULT_LAYERS = (("q", 160, 90, 100_000), ("h", 320, 180, 300_000), ("f", 640, 360, 900_000))


@dataclass
class Layer:
    rid: str
    width: int
    height: int
    bitrate_bps: int
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    sequence_number: int = field(default_factory=lambda: random.randint(0, 0x7FFF))
    encoder: Vp8Encoder = field(default_factory=Vp8Encoder)
    keyframe_requested: bool = True
    active: bool = True  # the server's layers_needed (dynacast) can stop it
    packets_sent: int = 0
    plis: int = 0


class SimulcastPublisher:
    """Publishes one simulcast camera track on `client` (already connected)."""

    def __init__(self, client: SfuClient, fps: int = 15,
                 layers: tuple[tuple[str, int, int, int], ...] = DEFAULT_LAYERS) -> None:
        self.client = client
        self.fps = fps
        self.layers = [Layer(rid, w, h, bps) for rid, w, h, bps in layers]
        for layer in self.layers:
            layer.encoder.target_bitrate = layer.bitrate_bps
        self.track_id: str | None = None
        self.audio_track_id: str | None = None
        self.frames_sent = 0
        self._transceiver: RTCRtpTransceiver | None = None
        self._task: asyncio.Task[None] | None = None
        self._ext_map = HeaderExtensionsMap()

    async def start(self, audio: MediaStreamTrack | None = None) -> str:
        """Publish the simulcast camera (and `audio` as the microphone, in the same offer)."""
        tracks: list[tuple[MediaStreamTrack, str]] = [(PlaceholderTrack("video"), "camera")]
        if audio is not None:
            tracks.append((audio, "microphone"))
        ids = await self.client.publish_many(tracks, sdp_transform=self._offer_simulcast)
        self.track_id = ids[0]
        self.audio_track_id = ids[1] if audio is not None else None
        assert self.client.pc is not None
        self._transceiver = next(t for t in self.client.pc.getTransceivers() if t.kind == "video"
                                 and t.direction == "sendonly")
        self._configure_extensions()
        self._tap_rtcp()
        previous = self.client.on_message

        def on_message(msg: dict[str, Any]) -> None:
            if msg["type"] == "layers_needed" and msg["track_id"] == self.track_id:
                for layer in self.layers:
                    if not layer.active and layer.rid in msg["layers"]:
                        layer.keyframe_requested = True  # a resumed layer starts with a key frame
                    layer.active = layer.rid in msg["layers"]
            if previous is not None:
                previous(msg)

        self.client.on_message = on_message
        self._task = asyncio.ensure_future(self._run())
        return self.track_id

    def _offer_simulcast(self, offer_sdp: str, transceivers: list[RTCRtpTransceiver]) -> str:
        mid = str(transceivers[0].mid)
        parts = re.split(r"(?m)^(?=m=)", offer_sdp)
        for i, part in enumerate(parts):
            if part.startswith("m=video") and re.search(rf"(?m)^a=mid:{re.escape(mid)}\r?$", part):
                part = part.rstrip("\r\n") + "\r\n" + f"a=extmap:{RID_EXT_ID} {URI_RID}\r\n"
                part += "".join(f"a=rid:{layer.rid} send\r\n" for layer in self.layers)
                part += f"a=simulcast:send {';'.join(layer.rid for layer in self.layers)}\r\n"
                parts[i] = re.sub(r"(?m)^a=ssrc.*\r?\n", "", part)  # simulcast is identified by rid
        return "".join(parts)

    def _configure_extensions(self) -> None:
        assert self._transceiver is not None
        negotiated = {e.uri: e.id for e in self._transceiver._headerExtensions}
        extensions = [RTCRtpHeaderExtensionParameters(id=negotiated[uri], uri=uri)
                      for uri in (URI_MID, URI_ABS_SEND_TIME) if uri in negotiated]
        extensions.append(RTCRtpHeaderExtensionParameters(id=RID_EXT_ID, uri=URI_RID))
        self._ext_map.configure(RTCRtpSendParameters(headerExtensions=extensions))

    def _tap_rtcp(self) -> None:
        """PLIs for our layer SSRCs reach no aiortc sender; catch them on the transport."""
        assert self._transceiver is not None
        transport = self._transceiver.sender.transport
        original = transport._handle_rtcp_data
        by_ssrc = {layer.ssrc: layer for layer in self.layers}

        async def handle_rtcp_data(data: bytes) -> None:
            with contextlib.suppress(ValueError):
                for packet in RtcpPacket.parse(data):
                    if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
                        layer = by_ssrc.get(packet.media_ssrc)
                        if layer is not None:
                            layer.plis += 1
                            layer.keyframe_requested = True
            await original(data)

        transport._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]

    async def _run(self) -> None:
        assert self._transceiver is not None
        loop = asyncio.get_running_loop()
        payload_type = int(self._transceiver._codecs[0].payloadType or 0)
        mid = str(self._transceiver.mid)
        start = time.monotonic()
        index = 0
        while True:
            await asyncio.sleep(max(0.0, start + index / self.fps - time.monotonic()))
            for layer in self.layers:
                if not layer.active:
                    continue
                frame = _pattern(layer.width, layer.height, index, self.fps)
                force, layer.keyframe_requested = layer.keyframe_requested, False
                payloads, timestamp = await loop.run_in_executor(None, layer.encoder.encode, frame, force)
                await self._send(layer, payloads, timestamp, payload_type, mid)
            index += 1
            self.frames_sent = index

    async def _send(self, layer: Layer, payloads: list[bytes], timestamp: int, payload_type: int,
                    mid: str) -> None:
        assert self._transceiver is not None
        transport = self._transceiver.sender.transport
        for i, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=payload_type, sequence_number=layer.sequence_number,
                               timestamp=timestamp, ssrc=layer.ssrc, payload=payload,
                               marker=i == len(payloads) - 1)
            packet.extensions.mid = mid
            packet.extensions.rtp_stream_id = layer.rid
            packet.extensions.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
            layer.sequence_number = (layer.sequence_number + 1) & 0xFFFF
            with contextlib.suppress(ConnectionError):
                await transport._send_rtp(packet.serialize(self._ext_map))
                layer.packets_sent += 1

    def stats(self) -> dict[str, Any]:
        return {layer.rid: {"packets": layer.packets_sent, "plis": layer.plis} for layer in self.layers}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


_BASES: dict[tuple[int, int], np.ndarray] = {}


def _pattern(width: int, height: int, index: int, fps: int) -> VideoFrame:
    base = _BASES.get((width, height))
    if base is None:
        y, x = np.mgrid[0:height, 0:width]
        base = _BASES[(width, height)] = np.stack(
            [x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)
    img = base.copy()
    bar = (index * max(1, width // 40)) % max(1, width - width // 10)
    img[:, bar:bar + max(2, width // 10)] = 255
    frame = VideoFrame.from_ndarray(img, format="bgr24")
    frame.pts = index * VIDEO_CLOCK // fps
    frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    return frame
