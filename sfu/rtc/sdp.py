"""SDP munging and reading: header-extension ids kept across renegotiations (Chromium refuses
reassignment), and the per-m-section facts the packet path needs (payload types, extension ids,
SSRCs), read from the SDP text because aiortc resets its own copies on every createOffer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiortc import sdp as aiortc_sdp

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

# Extensions that identify a stream on one connection; never forwarded to another connection.
ROUTING_URIS = frozenset({URI_MID, URI_RID, URI_REPAIRED_RID})

_EXTMAP = re.compile(r"^a=extmap:(\d+)(/\w+)? (\S+)", re.M)
_EXTMAP_LINE = re.compile(r"^a=extmap:(\d+)(/\w+)? (\S+)([^\r\n]*\r?\n?)", re.M)  # the whole line
_MAX_SDP_BYTES = 128 * 1024


class SdpError(ValueError):
    """The SDP cannot be parsed or used. `unusable`: it failed after aiortc had applied the remote
    description, and aiortc cannot roll back: that peer connection can never negotiate again."""

    def __init__(self, message: str, unusable: bool = False) -> None:
        super().__init__(message)
        self.unusable = unusable


@dataclass
class Codec:
    payload_type: int
    mime: str  # lower case, e.g. "video/vp8"
    clock_rate: int
    apt: int | None = None  # RTX: the payload type it repairs


@dataclass
class MediaSection:
    mid: str
    kind: str
    direction: str
    codecs: dict[int, Codec] = field(default_factory=dict)
    extmaps: dict[str, int] = field(default_factory=dict)  # uri -> id
    ssrcs: list[int] = field(default_factory=list)
    rtx_ssrcs: dict[int, int] = field(default_factory=dict)  # rtx ssrc -> media ssrc (FID group)
    port: int = 9
    send_rids: list[str] = field(default_factory=list)  # a=rid:<id> send, in a=simulcast:send order

    @property
    def rejected(self) -> bool:
        return self.port == 0


def validate(sdp: str) -> None:
    """Raise SdpError unless aiortc can parse this SDP and every media section has a mid."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise SdpError("empty SDP")
    if len(sdp) > _MAX_SDP_BYTES:
        raise SdpError("SDP too large")
    if not sdp.lstrip().startswith("v=0"):
        raise SdpError("SDP must start with v=0")
    try:
        parsed = aiortc_sdp.SessionDescription.parse(sdp)
        str(parsed)  # aiortc re-serializes it on every read of pc.remoteDescription: that must work too
    except Exception as exc:  # aiortc raises ValueError, KeyError, IndexError... on bad input
        raise SdpError(f"invalid SDP: {exc}") from exc
    mids = set()
    for media in parsed.media:
        if media.kind not in ("audio", "video", "application"):
            # aiortc keeps it without a transceiver; bundled onto it, the others would get no transport
            raise SdpError(f"unsupported m-section kind {media.kind[:20]!r}")
        if media.kind in ("audio", "video", "application") and not media.rtp.muxId:
            raise SdpError("every m-section needs a=mid")
        if media.kind in ("audio", "video") and media.direction is None:
            # aiortc cannot answer it (RFC 3264's default sendrecv is not applied)
            raise SdpError("every m-section needs a direction (a=sendrecv/sendonly/recvonly/inactive)")
        mids.add(media.rtp.muxId)
    ours = [(sec.kind, sec.mid) for sec in media_sections(sdp)]
    theirs = [(media.kind, media.rtp.muxId) for media in parsed.media if media.kind in ("audio", "video")]
    if ours != theirs:  # the server reads offers with media_sections and aiortc with its parser
        raise SdpError("ambiguous m-sections (mids or kinds read differently)")
    bundles = [group for group in parsed.group if group.semantic == "BUNDLE"]
    if len(bundles) > 1:
        # RFC 8843 §7.2.1 lets a mid be in one BUNDLE group only; aiortc handles one group (and
        # left a transceiver without its remote DTLS parameters given two)
        raise SdpError("more than one a=group:BUNDLE")
    for group in bundles:
        # RFC 8843 §7.2: a BUNDLE group names m-sections of this description. aiortc leaves a
        # transceiver without transport when it does not, and cannot even close the connection then.
        if not {str(item) for item in group.items} <= mids:
            raise SdpError("a=group:BUNDLE names a mid that no m-section has")


def media_sections(sdp: str) -> list[MediaSection]:
    """The audio/video m-sections of an SDP, in order."""
    sections: list[MediaSection] = []
    for lines in _media_blocks(sdp):
        m_line = lines[0].split()
        kind = m_line[0][2:]
        if kind not in ("audio", "video") or len(m_line) < 2 or not m_line[1].isdigit():
            continue  # validate() refuses such an m-line; this reader must not raise on it either
        sec = MediaSection(mid="", kind=kind, direction="sendrecv", port=int(m_line[1]))
        fid: list[tuple[int, int]] = []
        for line in lines[1:]:
            try:
                _read_attribute(sec, line, fid)
            except (ValueError, IndexError):
                continue  # a malformed attribute line is skipped: a peer's SDP never raises here
        sec.rtx_ssrcs = {rtx: media for media, rtx in fid}
        sec.send_rids = _simulcast_send_rids(lines)
        sections.append(sec)
    return sections


def _media_blocks(sdp: str) -> list[list[str]]:
    """The lines of each m-section, split exactly as aiortc splits them (str.splitlines: a stray
    CR or other line break inside a line starts a new line for aiortc, and so it does here)."""
    blocks: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            blocks.append([line])
        elif blocks and line.strip():
            blocks[-1].append(line)
    return blocks


def _read_attribute(sec: MediaSection, line: str, fid: list[tuple[int, int]]) -> None:
    if line.startswith("a=mid:"):
        sec.mid = line[6:].strip()
    elif line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
        sec.direction = line[2:]
    elif line.startswith("a=rtpmap:"):
        pt_s, _, rest = line[9:].partition(" ")
        name, _, rate = rest.partition("/")
        pt = int(pt_s)
        sec.codecs[pt] = Codec(pt, f"{sec.kind}/{name.lower()}", int(rate.split("/")[0] or 0))
    elif line.startswith("a=fmtp:"):
        pt_s, _, params = line[7:].partition(" ")
        match = re.search(r"apt=(\d+)", params)
        codec = sec.codecs.get(int(pt_s))
        if match and codec is not None:
            codec.apt = int(match.group(1))
    elif line.startswith("a=extmap:"):
        match = _EXTMAP.match(line)
        if match:
            sec.extmaps[match.group(3)] = int(match.group(1))
    elif line.startswith("a=ssrc-group:FID "):
        parts = line.split()[1:]
        if len(parts) >= 2:
            fid.append((int(parts[0]), int(parts[1])))
    elif line.startswith("a=ssrc:"):
        ssrc = int(line[7:].split()[0])
        if ssrc not in sec.ssrcs:
            sec.ssrcs.append(ssrc)


def _simulcast_send_rids(lines: list[str]) -> list[str]:
    """RFC 8853 §5.1: `a=simulcast:send q;h;f` lists the layers (alternatives after `,` are
    ignored, paused `~` layers kept); only rids also declared `a=rid:<id> send` count."""
    declared = [line[6:].split()[0] for line in lines
                if line.startswith("a=rid:") and len(line[6:].split()) > 1 and line[6:].split()[1] == "send"]
    simulcast = next((line for line in lines if line.startswith("a=simulcast:")), None)
    if simulcast is None:
        return []
    words = simulcast[len("a=simulcast:"):].split()
    order: list[str] = []
    for direction, rid_list in zip(words[::2], words[1::2], strict=False):
        if direction == "send":
            order = [alt.split(",")[0].lstrip("~") for alt in rid_list.split(";")]
    return [rid for rid in order if rid in declared]


def add_simulcast_recv(sdp: str, mid: str, rids: list[str], ext_ids: dict[str, int]) -> str:
    """Make our description receive simulcast in the m-section of `mid`: the rid and repaired-rid
    extmaps (the ids the client chose), `a=rid:<id> recv` per layer and `a=simulcast:recv`.
    Chromium sends only its first layer unless our answer says this, and fails to answer a
    re-offer that forgets it; so every description the server makes carries it."""
    parts = re.split(r"(?m)^(?=m=)", sdp)
    out = []
    for part in parts:
        if part.startswith("m=") and re.search(rf"(?m)^a=mid:{re.escape(mid)}\r?$", part):
            eol = "\r\n" if "\r\n" in part else "\n"
            part = part.rstrip("\r\n") + eol
            for uri in (URI_RID, URI_REPAIRED_RID):
                if uri in ext_ids and f" {uri}" not in part:
                    part += f"a=extmap:{ext_ids[uri]} {uri}{eol}"
            part = re.sub(r"(?m)^a=(rid|simulcast):.*\r?\n", "", part)
            part += "".join(f"a=rid:{rid} recv{eol}" for rid in rids)
            part += f"a=simulcast:recv {';'.join(rids)}{eol}"
        out.append(part)
    return "".join(out)


def section_by_mid(sdp: str, mid: str) -> MediaSection | None:
    return next((s for s in media_sections(sdp) if s.mid == mid), None)


class ExtmapIds:
    """Header-extension ids of one peer connection, fixed by the first negotiation.

    Chromium refuses a re-offer that renumbers an extension ("RTP extension ID reassignment not
    supported"), and aiortc always offers its own ids, so every server offer is rewritten to the
    ids already negotiated for each URI; URIs never negotiated get ids nobody uses."""

    def __init__(self) -> None:
        self.by_uri: dict[str, int] = {}

    def learn(self, sdp: str) -> None:
        for match in _EXTMAP.finditer(sdp):
            self.by_uri.setdefault(match.group(3), int(match.group(1)))

    def remap(self, sdp: str) -> str:
        """Rewrite `sdp`'s extmap lines to the negotiated ids. A URI never negotiated gets a free
        one-byte id (1-14); when the peer's offer took all fourteen, its line is left out (the
        extension is then not used on this connection, nothing else changes)."""
        used = set(self.by_uri.values())
        free = (i for i in range(1, 15) if i not in used)
        for match in _EXTMAP.finditer(sdp):
            if match.group(3) not in self.by_uri:
                new_id = next(free, None)
                if new_id is None:
                    continue
                self.by_uri[match.group(3)] = new_id
                used.add(new_id)
        return _EXTMAP_LINE.sub(
            lambda m: f"a=extmap:{self.by_uri[m.group(3)]}{m.group(2) or ''} {m.group(3)}{m.group(4)}"
            if m.group(3) in self.by_uri else "", sdp
        )
