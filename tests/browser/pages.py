"""Helpers shared by the browser tests: page console capture and polling."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import ROOT


@dataclass
class PageLog:
    """Console messages and uncaught errors of one page, for diagnostics on failure."""

    label: str
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda err: self.errors.append(f"pageerror: {err}"))

    def _on_console(self, msg: Any) -> None:
        line = f"{msg.type}: {msg.text}"
        self.lines.append(line)
        if msg.type == "error":
            self.errors.append(line)

    def report(self, last_lines: int = 60) -> str:
        out = [f"--- {self.label}: {len(self.errors)} console error(s)"]
        out += [f"  {e}" for e in self.errors]
        out.append(f"--- {self.label}: last {last_lines} console lines")
        out += [f"  {line}" for line in self.lines[-last_lines:]]
        return "\n".join(out)


async def wait_for(check: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> Any:
    """Polls `check` until it returns something truthy; fails with its last value on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; last value: {last!r}")


MEDIA_TIMEOUT_S = 60.0
SAMPLE_GAP_S = 2.0

# Loaded into a page of the server's origin: a bare client (no demo page) that records its events,
# shows each video it receives, and can hold back the server's messages from its first offer on
# (to provoke an offer collision). `quality`: the set_quality limits it asks for each video track.
HARNESS = """async ({wsUrl, room, name, token, quality, holdOffers}) => {
  const { SfuClient } = await import('/web/sfu-client.js');
  const client = new SfuClient(wsUrl, { room, name, token });
  const h = { client, events: [], videos: new Map(), held: [], gated: false, streams: [] };
  window.h = h;
  for (const type of ['joined', 'participantjoined', 'participantleft', 'trackpublished',
      'trackunpublished', 'track', 'trackended', 'trackmuted', 'trackunmuted', 'qualitychanged',
      'layersneeded', 'activespeakers', 'data', 'screenshareended', 'error', 'state', 'resumed',
      'trackresumed']) {
    client.addEventListener(type, (e) => {
      const d = e.detail || {};
      h.events.push({ type, at: Date.now(), trackId: d.trackId, participantId: d.participantId,
        mid: d.mid, kind: d.kind, source: d.source, code: d.code, message: d.message, state: d.state,
        layer: d.layer, layers: d.layers, width: d.width, height: d.height, paused: d.paused,
        reason: d.reason, from: d.from, reliable: d.reliable,
        data: d.binary ? Array.from(d.data) : d.data, speakers: d.speakers,
        resumeFailed: d.resumeFailed, attempts: d.attempts });
    });
  }
  client.addEventListener('track', ({ detail }) => {
    if (detail.kind !== 'video') return;
    if (quality) client.setQuality(detail.trackId, quality);
    const v = document.createElement('video');
    Object.assign(v, { autoplay: true, muted: true, playsInline: true });
    v.srcObject = new MediaStream([detail.track]);
    document.body.append(v);
    h.videos.set(detail.trackId, { video: v, mid: detail.mid, participantId: detail.participantId,
      source: detail.source });
  });
  client.addEventListener('trackresumed', ({ detail }) => {  // after a resume: same id, new m-line
    const entry = h.videos.get(detail.trackId);
    if (entry) { entry.mid = detail.mid; entry.video.srcObject = detail.stream; }
  });
  client.addEventListener('trackended', ({ detail }) => {
    const entry = h.videos.get(detail.trackId);
    if (entry) { entry.video.remove(); h.videos.delete(detail.trackId); }
  });
  h.publish = async (constraints, source, options) => {
    const stream = await navigator.mediaDevices.getUserMedia(constraints);
    h.streams.push(stream);
    h.publishing = 'pending';
    client.publish(stream, { source, ...(options || {}) }).then(() => { h.publishing = 'published'; },
      (e) => { h.publishing = 'failed: ' + e.message; });
  };
  h.hold = (fromType) => {  // keep received messages back (from the first of type `fromType` on) until release()
    const deliver = client._ws.onmessage;
    h.gated = fromType ? 'waiting' : true;
    client._ws.onmessage = (e) => {
      if (h.gated === 'waiting' && JSON.parse(e.data).type === fromType) h.gated = true;
      return h.gated === true ? h.held.push(e) : deliver(e);
    };
    h.release = () => { h.gated = false; for (const e of h.held.splice(0)) deliver(e); };
  };
  h.heldTypes = () => h.held.map((e) => JSON.parse(e.data).type);
  h.remote = async () => {
    const stats = new Map();
    (await client.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') stats.set(s.trackIdentifier, s);
    });
    return [...h.videos].map(([trackId, { video, mid, participantId, source }]) => {
      const tr = client.pc.getTransceivers().find((t) => t.mid === mid);
      const s = (tr && stats.get(tr.receiver.track.id)) || {};
      return { trackId, mid, participantId, source, videoWidth: video.videoWidth,
        framesDecoded: s.framesDecoded ?? 0, frameWidth: s.frameWidth ?? 0,
        frameHeight: s.frameHeight ?? 0, bytesReceived: s.bytesReceived ?? 0,
        packetsReceived: s.packetsReceived ?? 0 };
    });
  };
  h.outbound = async () => {  // what we send, per simulcast layer
    const out = [];
    (await client.pc.getStats()).forEach((s) => {
      if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
      out.push({ rid: s.rid ?? null, mid: s.mid, active: s.active, bytesSent: s.bytesSent,
        frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0, framesSent: s.framesSent ?? 0,
        qualityLimitationReason: s.qualityLimitationReason, targetBitrate: s.targetBitrate,
        pliCount: s.pliCount, nackCount: s.nackCount, keyFramesEncoded: s.keyFramesEncoded, ssrc: s.ssrc });
    });
    return out.sort((a, b) => String(a.rid).localeCompare(String(b.rid)));
  };
  await client.join();
  if (holdOffers) h.hold('offer');  // before any later message is delivered
  return client.participant.id;
}"""

AV = {"video": {"width": 320, "height": 180}, "audio": True}


class Participant:
    """One page running the bare client harness."""

    def __init__(self, page: Any, log: PageLog) -> None:
        self.page, self.log, self.id = page, log, ""

    async def remote(self) -> list[dict[str, Any]]:
        return list(await self.page.evaluate("h.remote()"))

    async def outbound(self) -> list[dict[str, Any]]:
        return list(await self.page.evaluate("h.outbound()"))

    async def events(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in await self.page.evaluate("h.events") if e["type"] == type_]

    async def publish(self, source: str = "camera", constraints: dict[str, Any] = AV,
                      **options: Any) -> None:
        await self.page.evaluate("([c, s, o]) => h.publish(c, s, o)", [constraints, source, options])

    async def published(self) -> str | None:
        """'published' or 'failed: …' once the server answered (or refused), else None."""
        state = str(await self.page.evaluate("h.publishing"))
        return None if state == "pending" else state

    async def wait_decoding(self, participant_ids: set[str]) -> list[dict[str, Any]]:
        """Waits until this page shows a video of each of `participant_ids` (and no other), then
        checks that every one of them decodes new frames."""

        async def shown() -> list[dict[str, Any]] | None:
            videos = [v for v in await self.remote() if v["videoWidth"] > 0]
            return videos if {v["participantId"] for v in videos} == participant_ids else None

        before = await wait_for(shown, MEDIA_TIMEOUT_S, f"{self.log.label} to show {participant_ids}")
        await asyncio.sleep(SAMPLE_GAP_S)
        after = {v["trackId"]: v["framesDecoded"] for v in await self.remote()}
        for v in before:
            assert after.get(v["trackId"], 0) > v["framesDecoded"], (
                f"{self.log.label}: {v['trackId']} not decoding ({v['framesDecoded']} -> {after})")
        return before


def mint_token(jwt_secret: str, room: str, identity: str, *flags: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sfu", "token", "--room", room, "--identity", identity, *flags],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "SFU_AUTH__JWT_SECRET": jwt_secret},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
