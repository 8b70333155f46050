"""PeerSession: a participant's one RTCPeerConnection on the server. Serializes every SDP
operation, demultiplexes the participant's incoming RTP to the relays of its published tracks,
and owns the sendonly m-lines ("slots") that carry its subscriptions."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from struct import unpack_from
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPsfbPacket,
    pack_remb_fci,
)
from aiortc.sdp import candidate_from_sdp

from sfu.bwe.estimator import SubscriberEstimate
from sfu.media.counters import COUNTERS
from sfu.media.downtrack import DownTrack, OutStream
from sfu.media.relay import TrackRelay
from sfu.media.rtp_header import find_extension
from sfu.rtc import hooks, sdp
from sfu.rtc.feedback import on_subscriber_rtcp
from sfu.rtc.sdp import ROUTING_URIS, URI_MID, ExtmapIds, MediaSection, SdpError
from sfu.rtc.writer import RtpWriter

log = logging.getLogger(__name__)

# libsrtp keeps state for every SSRC that authenticates and searches it linearly for every packet of
# the transport: a peer sending many SSRCs makes each of its packets slower, on the loop all share
MAX_UNKNOWN_SSRCS = 64  # distinct SSRCs no publication claims, per peer connection: more is abuse
MAX_SSRCS_PER_PUBLICATION = 16  # learned from the mid/rid extensions (simulcast needs one per layer)
NON_MEDIA_CODECS = ("/rtx", "/red", "/ulpfec", "/flexfec-03", "/telephone-event", "/cn")


class PlaceholderTrack(MediaStreamTrack):
    """The track of every server sender. recv() never returns, so aiortc's sender never creates an
    encoder; the SFU writes forwarded packets around it."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.Future()


@dataclass
class Slot:
    """One server sendonly m-line and the subscription it carries now (None: inactive, reusable)."""

    transceiver: RTCRtpTransceiver
    out: OutStream
    downtrack: DownTrack | None = None
    track_id: str | None = None
    configured_for: DownTrack | None = None


@dataclass
class Publication:
    """A sendonly m-line of the client: one published track, one relay per simulcast layer."""

    mid: str
    kind: str
    relays: list[TrackRelay]  # in the order of a=simulcast:send (low to high for browsers)
    transceiver: RTCRtpTransceiver
    rids: list[str] = field(default_factory=list)
    ssrcs: set[int] = field(default_factory=set)

    def relay_for_rid(self, rid: str) -> TrackRelay | None:
        return next((r for r in self.relays if r.rid == rid), None)


class PeerSession:
    """Everything the server does with one participant's peer connection."""

    def __init__(self, participant_id: str, ice_servers: list[RTCIceServer]) -> None:
        self.participant_id = participant_id
        # max-bundle: every m-line on one transport from the start. aiortc's default (balanced) gives
        # the second and later server transceivers of a kind a transport that the answer's BUNDLE
        # never moves, so a viewer joining after two publishers got one track of each kind.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers,
                                                     bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.lock = asyncio.Lock()
        self.extmap_ids = ExtmapIds()
        self.publications: dict[str, Publication] = {}  # by mid
        self.slots: list[Slot] = []
        self._relay_by_ssrc: dict[int, TrackRelay] = {}
        self._ignored_ssrcs: set[int] = set()
        self._retired_ssrcs: set[int] = set()  # of removed publications: packets in flight are no abuse
        self._unknown_ssrcs: set[int] = set()  # never claimed (at most MAX_UNKNOWN_SSRCS + 1)
        self.on_abuse: Callable[[str], None] | None = None  # called once when the peer must be cut off
        self._mid_ext_id: int | None = None
        self._rid_ext_id: int | None = None
        self._repaired_rid_ext_id: int | None = None
        self.simulcast: dict[str, list[str]] = {}  # mid -> rids the client sends on it
        self.estimate = SubscriberEstimate()  # this participant's downlink, from its REMB and RR
        self.closed = False

    # -- negotiation -------------------------------------------------------------------------

    @property
    def stable(self) -> bool:
        return self.pc.signalingState == "stable"

    async def answer_offer(self, offer_sdp: str) -> tuple[str, list[MediaSection], list[str]] | None:
        """Apply a client offer; return (answer, new sendonly sections, mids no longer sent), or
        None when our own offer is outstanding (we are the impolite peer: ignore theirs)."""
        sdp.validate(offer_sdp)
        if not self.stable:
            return None
        sections = sdp.media_sections(offer_sdp)
        applied = False
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            applied = True
            self.extmap_ids.learn(offer_sdp)
            for section in sections:
                if section.send_rids and section.kind == "video" and not section.rejected:
                    self.simulcast[section.mid] = section.send_rids
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(
                RTCSessionDescription(sdp=self._with_simulcast(answer.sdp), type="answer"))
        except SdpError:
            raise
        except Exception as exc:  # aiortc raises many types for unusable descriptions
            raise SdpError(f"cannot apply offer: {exc}", unusable=applied) from exc
        self._mid_ext_id = self.extmap_ids.by_uri.get(URI_MID)
        self._rid_ext_id = self.extmap_ids.by_uri.get(sdp.URI_RID)
        self._repaired_rid_ext_id = self.extmap_ids.by_uri.get(sdp.URI_REPAIRED_RID)
        self._tap_transports()
        new_sections: list[MediaSection] = []
        gone: list[str] = []
        for section in sections:
            sending = section.direction in ("sendonly", "sendrecv") and not section.rejected
            if sending and section.mid not in self.publications:
                new_sections.append(section)
            elif not sending and section.mid in self.publications:
                gone.append(section.mid)
        # aiortc re-serializes its description from its own model, which has no rid/simulcast lines
        return self._with_simulcast(self.pc.localDescription.sdp), new_sections, gone

    def _with_simulcast(self, description: str) -> str:
        for mid, rids in self.simulcast.items():
            description = sdp.add_simulcast_recv(description, mid, rids, self.extmap_ids.by_uri)
        return description

    def add_publication(self, section: MediaSection, relays: list[TrackRelay]) -> Publication:
        transceiver = next(t for t in self.pc.getTransceivers() if t.mid == section.mid)
        rids = self.simulcast.get(section.mid, [])
        for relay, rid in zip(relays, rids, strict=False):
            relay.rid = rid
        publication = Publication(section.mid, section.kind, relays, transceiver, rids=list(rids))
        self.publications[section.mid] = publication
        self._refresh_publications()
        return publication

    def remove_publication(self, mid: str) -> Publication | None:
        publication = self.publications.pop(mid, None)
        if publication is not None:
            for ssrc in publication.ssrcs:
                self._relay_by_ssrc.pop(ssrc, None)
            self._retired_ssrcs.update(publication.ssrcs)
        return publication

    def keyframe_requester(self, mid: str) -> Callable[[int], None]:
        """A PLI sender for the relays of the publication at `mid` (each relay passes its SSRC)."""
        receiver = next(t for t in self.pc.getTransceivers() if t.mid == mid).receiver

        def request(media_ssrc: int) -> None:
            asyncio.ensure_future(hooks.send_pli(receiver, media_ssrc))

        return request

    def plan_offer(self, add: list[tuple[str, list[TrackRelay]]], remove: list[str]) -> None:
        """Stage subscription changes on the m-lines; the caller then calls `create_offer`. Must
        run under `lock` with the connection stable: aiortc would hand a mid-less transceiver to
        the next remote m-line of the same kind."""
        for track_id in remove:
            slot = next((s for s in self.slots if s.track_id == track_id), None)
            if slot is None:
                continue
            if slot.downtrack is not None:
                slot.downtrack.close()
            slot.downtrack, slot.track_id, slot.configured_for = None, None, None
            slot.transceiver.direction = "inactive"
        for track_id, layers in add:
            kind = layers[0].kind
            slot = next((s for s in self.slots if s.track_id is None
                         and s.transceiver.kind == kind and s.transceiver.mid is not None), None)
            if slot is None:
                transceiver = self.pc.addTransceiver(PlaceholderTrack(kind), direction="sendonly")
                sender = transceiver.sender
                writer = RtpWriter(sender.transport)
                out = OutStream(sender._ssrc, sender._rtx_ssrc, writer,
                                functools.partial(hooks.feed_sender_report, sender))
                slot = Slot(transceiver, out)
                self.slots.append(slot)
                hooks.tap_sender_rtcp(sender, functools.partial(on_subscriber_rtcp, self.estimate, slot))
            slot.transceiver.direction = "sendonly"
            slot.track_id = track_id
            slot.downtrack = DownTrack(layers, slot.out, self.participant_id)

    async def create_offer(self) -> tuple[str, dict[str, str]]:
        offer = await self.pc.createOffer()
        offer_sdp = self._with_simulcast(self.extmap_ids.remap(offer.sdp))
        await self.pc.setLocalDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        self._refresh_publications()
        mids = {s.transceiver.mid: s.track_id for s in self.slots if s.track_id and s.transceiver.mid}
        return self._with_simulcast(self.pc.localDescription.sdp), mids

    async def apply_answer(self, answer_sdp: str) -> None:
        sdp.validate(answer_sdp)
        if self.pc.signalingState != "have-local-offer":
            raise SdpError("no offer of ours is outstanding")
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        except Exception as exc:
            raise SdpError(f"cannot apply answer: {exc}") from exc
        self._tap_transports()
        self._configure_slots(answer_sdp)

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        if not candidate or not candidate.get("candidate"):
            return  # end of candidates: aioice needs no signal
        text = str(candidate["candidate"])
        if text.startswith("candidate:"):
            text = text[len("candidate:"):]
        ice_candidate = candidate_from_sdp(text)
        ice_candidate.sdpMid = candidate.get("sdpMid")
        ice_candidate.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await self.pc.addIceCandidate(ice_candidate)

    # -- packet path -------------------------------------------------------------------------

    def _tap_transports(self) -> None:
        for transceiver in self.pc.getTransceivers():
            hooks.tap_rtp(transceiver.receiver.transport, self._on_rtp)

    def _refresh_publications(self) -> None:
        """Payload types and SSRCs of each publication, from the latest descriptions."""
        local = self.pc.localDescription.sdp if self.pc.localDescription else ""
        remote = self.pc.remoteDescription.sdp if self.pc.remoteDescription else ""
        for mid, publication in self.publications.items():
            for text in (remote, local):
                section = sdp.section_by_mid(text, mid) if text else None
                if section is None:
                    continue
                codecs = {pt: c.mime for pt, c in section.codecs.items() if not c.mime.endswith(NON_MEDIA_CODECS)}
                for relay in publication.relays:
                    relay.update_codecs(codecs)
            section = sdp.section_by_mid(remote, mid) if remote else None
            if section is not None and not publication.rids:  # simulcast SSRCs come from the rid extension
                self._ignored_ssrcs.update(section.rtx_ssrcs)
                for ssrc in section.ssrcs:
                    if ssrc not in section.rtx_ssrcs:
                        self._relay_by_ssrc[ssrc] = publication.relays[0]
                        publication.ssrcs.add(ssrc)

    def _on_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        """Every decrypted RTP packet from this participant: find its relay by SSRC (a dict hit
        after the first packet) and forward."""
        COUNTERS.rtp_in += 1
        COUNTERS.rtp_in_bytes += len(data)
        if len(data) < 12:
            COUNTERS.rtp_malformed += 1
            return
        ssrc = unpack_from("!I", data, 8)[0]
        relay = self._relay_by_ssrc.get(ssrc)
        if relay is None:
            relay = self._learn_ssrc(ssrc, data)
            if relay is None:
                COUNTERS.rtp_unroutable += 1
                self._note_unknown(ssrc)
                return
        relay.forward(data)

    def _note_unknown(self, ssrc: int) -> None:
        """Off the forwarding path (unroutable packets only): a peer that sends RTP on more than
        MAX_UNKNOWN_SSRCS SSRCs nobody claims is cut off (`on_abuse`)."""
        unknown = self._unknown_ssrcs
        if len(unknown) > MAX_UNKNOWN_SSRCS or ssrc in unknown or ssrc in self._ignored_ssrcs \
                or ssrc in self._retired_ssrcs:
            return
        unknown.add(ssrc)
        if len(unknown) > MAX_UNKNOWN_SSRCS and self.on_abuse is not None:
            self.on_abuse(f"RTP on {len(unknown)} SSRCs that no published track claims")

    def _learn_ssrc(self, ssrc: int, data: bytes) -> TrackRelay | None:
        """An SSRC the SDP did not announce: identify its m-line by the mid header extension and
        its simulcast layer by the rid extension (RFC 8852). Browsers stop sending both once our
        receiver reports name the SSRC, so what is learned here is kept."""
        if ssrc in self._ignored_ssrcs or self._mid_ext_id is None:
            return None
        mid = find_extension(data, self._mid_ext_id)
        if not mid:
            return None
        publication = self.publications.get(mid.decode("ascii", "replace"))
        if publication is None or len(publication.ssrcs) >= MAX_SSRCS_PER_PUBLICATION:
            return None
        relay = publication.relays[0]
        if publication.rids:
            if self._repaired_rid_ext_id is not None and find_extension(data, self._repaired_rid_ext_id):
                self._ignored_ssrcs.add(ssrc)  # RTX of a layer: we never NACK, so never forward it
                return None
            rid = find_extension(data, self._rid_ext_id) if self._rid_ext_id is not None else None
            layer = publication.relay_for_rid(rid.decode("ascii", "replace")) if rid else None
            if layer is None:
                return None
            relay = layer
        self._relay_by_ssrc[ssrc] = relay
        publication.ssrcs.add(ssrc)
        return relay

    def _configure_slots(self, answer_sdp: str) -> None:
        """After the subscriber answered: payload types, RTX, extension ids and the transport."""
        for slot in self.slots:
            downtrack = slot.downtrack
            mid = slot.transceiver.mid
            if downtrack is None or mid is None:
                continue
            section = sdp.section_by_mid(answer_sdp, mid)
            if section is None or section.rejected or section.direction not in ("recvonly", "sendrecv"):
                continue
            slot.out.writer = RtpWriter(slot.transceiver.sender.transport)
            pt_by_mime: dict[str, int] = {}
            rtx_pt: int | None = None
            for pt, codec in section.codecs.items():
                if codec.mime.endswith("/rtx"):
                    continue
                pt_by_mime.setdefault(codec.mime, pt)
            first_media = next(iter(pt_by_mime.values()), None)
            for pt, codec in section.codecs.items():
                if codec.mime.endswith("/rtx") and codec.apt == first_media:
                    rtx_pt = pt
            downtrack.configure(pt_by_mime, rtx_pt, self._ext_map(downtrack, section),
                                next((c.clock_rate for c in section.codecs.values()), 0))
            log.debug("slot %s configured: pts %s rtx %s ext %s", mid, pt_by_mime, rtx_pt,
                      self._ext_map(downtrack, section))
            slot.configured_for = downtrack

    def _ext_map(self, downtrack: DownTrack, section: MediaSection) -> dict[int, int]:
        publisher_ids = downtrack.layers[0].ext_ids
        return {in_id: section.extmaps[uri] for uri, in_id in publisher_ids.items()
                if uri in section.extmaps and uri not in ROUTING_URIS}

    async def send_publisher_estimate(self, bitrate_bps: int) -> None:
        """REMB (draft-alvestrand-rmcat-remb) to this participant for all the SSRCs it publishes:
        browsers cap their send rate by it, and start a simulcast top layer only when it allows."""
        ssrcs = sorted({r.media_ssrc for p in self.publications.values() if p.kind == "video"
                        for r in p.relays if r.media_ssrc is not None})
        publication = next((p for p in self.publications.values() if p.kind == "video"), None)
        if not ssrcs or publication is None or self.closed:
            return
        receiver = publication.transceiver.receiver
        packet = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=publication.transceiver.sender._ssrc, media_ssrc=0,
                                fci=pack_remb_fci(bitrate_bps, ssrcs[:255]))
        await receiver._send_rtcp(packet)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for slot in self.slots:
            if slot.downtrack is not None:
                slot.downtrack.close()
        self.slots.clear()
        self._relay_by_ssrc.clear()
        try:
            await self.pc.close()
        except Exception:  # a connection broken by bad input must not keep its participant alive
            log.exception("participant %s: closing the peer connection failed", self.participant_id)
