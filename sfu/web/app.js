/**
 * app.js: the demo page. `/?room=NAME&name=NAME[&token=JWT]` joins a room, publishes camera and
 * microphone (watches only without them, or when the token does not grant publishing) and shows
 * one tile per remote participant. `window.sfuApp` and `window.sfuStats` are for tests.
 */
import { SfuClient } from '/web/sfu-client.js';

const LOG = '[sfu-demo]';
const params = new URLSearchParams(location.search);
const room = params.get('room') || 'demo';
const name = params.get('name') || `guest-${Math.random().toString(36).slice(2, 6)}`;
const token = params.get('token') || undefined; // needed when the server requires access tokens
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

const grid = document.getElementById('grid');
const statusLine = document.getElementById('status');
const leaveButton = document.getElementById('leave');
const localVideo = document.getElementById('local-video');

const client = new SfuClient(wsUrl, { room, name, token });
/** @type {Map<string, {el: HTMLElement, media: Map<string, HTMLMediaElement>}>} tiles by
 * participant id; `media` holds one <video> or <audio> per track id */
const tiles = new Map();
let localStream = null;
let lastError = '';

const state = { room, name, phase: 'starting', tiles };

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle('error', isError);
}

function refreshStatus() {
  if (state.phase !== 'joined') return;
  const conn = client.pc ? client.pc.connectionState : 'new';
  setStatus(`joined as ${name} · ${client.participants.size} other participant(s) · connection ${conn}` +
    (lastError ? ` · last error: ${lastError}` : ''), Boolean(lastError));
}

function participantName(participantId) {
  const p = client.participants.get(participantId);
  return p && p.name ? p.name : participantId || 'unknown';
}

function tileFor(participantId) {
  let tile = tiles.get(participantId);
  if (tile) return tile;
  const el = document.createElement('figure');
  el.className = 'tile remote';
  el.dataset.participantId = participantId;
  const label = document.createElement('figcaption');
  label.textContent = participantName(participantId);
  el.append(label);
  grid.append(el);
  tile = { el, media: new Map() };
  tiles.set(participantId, tile);
  return tile;
}

function removeTile(participantId) {
  const tile = tiles.get(participantId);
  if (!tile) return;
  for (const media of tile.media.values()) media.srcObject = null;
  tile.el.remove();
  tiles.delete(participantId);
}

function onTrack({ trackId, participantId, kind, source, track }) {
  console.info(LOG, `showing ${kind} ${trackId} (${source}) of ${participantName(participantId)}`);
  const tile = tileFor(participantId);
  const media = document.createElement(kind === 'video' ? 'video' : 'audio');
  media.autoplay = true;
  if (kind === 'video') {
    media.playsInline = true;
    media.muted = true; // sound plays through the tile's <audio> elements
    tile.el.prepend(media);
  } else {
    tile.el.append(media);
  }
  // A fresh stream per element: a recycled m-line reuses the same MediaStreamTrack object.
  media.srcObject = new MediaStream([track]);
  media.dataset.trackId = trackId;
  tile.media.set(trackId, media);
  tile.el.classList.toggle('multi', [...tile.media.values()].filter(isVideo).length > 1);
}

function onTrackEnded({ trackId }) {
  for (const [participantId, tile] of tiles) {
    const media = tile.media.get(trackId);
    if (!media) continue;
    media.srcObject = null;
    media.remove();
    tile.media.delete(trackId);
    if (tile.media.size === 0) removeTile(participantId);
  }
}

/** An operator muted a track: the server forwards nothing, so dim its element. */
function markMuted(trackId, muted) {
  for (const tile of tiles.values()) {
    const media = tile.media.get(trackId);
    if (media) media.classList.toggle('muted', muted);
  }
}

function isVideo(media) {
  return media instanceof HTMLVideoElement;
}

client.addEventListener('track', (e) => onTrack(e.detail));
client.addEventListener('trackended', (e) => onTrackEnded(e.detail));
client.addEventListener('trackunpublished', (e) => onTrackEnded(e.detail));
client.addEventListener('participantleft', (e) => { removeTile(e.detail.participantId); refreshStatus(); });
client.addEventListener('participantjoined', refreshStatus);
client.addEventListener('state', (e) => {
  if (e.detail.state === 'closed') {
    state.phase = 'closed';
    leaveButton.disabled = true;
    setStatus(e.detail.reason === 'left' ? 'left the room' : `disconnected (${e.detail.reason})`,
      e.detail.reason !== 'left');
  } else {
    refreshStatus();
  }
});
client.addEventListener('trackmuted', (e) => markMuted(e.detail.trackId, true));
client.addEventListener('trackunmuted', (e) => markMuted(e.detail.trackId, false));
client.addEventListener('draining', (e) => {
  lastError = `the server is shutting down (in ${e.detail.deadlineS} s)`;
  refreshStatus();
});
client.addEventListener('error', (e) => {
  lastError = `${e.detail.code}: ${e.detail.message}`;
  if (e.detail.code !== 'bad_candidate') refreshStatus();
});

function leave() {
  client.leave();
  for (const id of [...tiles.keys()]) removeTile(id);
  if (localStream) localStream.getTracks().forEach((t) => t.stop());
  localVideo.srcObject = null;
}

async function start() {
  document.getElementById('room-label').textContent = `room ${room}`;
  document.getElementById('local-label').textContent = `${name} (you)`;
  leaveButton.addEventListener('click', leave);
  try {
    setStatus('asking for camera and microphone…');
    localStream = await navigator.mediaDevices.getUserMedia({
      video: { width: 640, height: 360 }, audio: true,
    });
    localVideo.srcObject = localStream;
  } catch (err) {
    console.warn(LOG, 'no camera or microphone, joining to watch only:', err);
  }
  try {
    setStatus(`joining room ${room}…`);
    await client.join();
  } catch (err) {
    console.error(LOG, 'join failed:', err);
    state.phase = 'failed';
    setStatus(`cannot join: ${err.message || err}`, true);
    return;
  }
  state.phase = 'joined';
  leaveButton.disabled = false;
  refreshStatus();
  if (!localStream) return;
  try {
    await client.publish(localStream, { source: 'camera' });
    console.info(LOG, 'publishing camera and microphone');
  } catch (err) {
    console.warn(LOG, 'publishing failed:', err);
    lastError = `cannot publish: ${err.message || err}`;
  }
  refreshStatus();
}

window.sfuApp = {
  client,
  state,
  /** One entry per remote video element on the page. */
  remoteVideos() {
    const out = [];
    for (const [participantId, tile] of tiles) {
      for (const [trackId, media] of tile.media) {
        if (!isVideo(media)) continue;
        out.push({
          participantId,
          name: participantName(participantId),
          trackId,
          videoWidth: media.videoWidth,
          videoHeight: media.videoHeight,
          readyState: media.readyState,
        });
      }
    }
    return out;
  },
};

/** Inbound video statistics of the peer connection, one entry per receiving m-line. */
window.sfuStats = async () => {
  if (!client.pc) return [];
  const midByTrack = new Map(client.pc.getTransceivers()
    .filter((t) => t.mid !== null).map((t) => [t.receiver.track.id, t.mid]));
  const out = [];
  (await client.pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
    const mid = s.mid ?? midByTrack.get(s.trackIdentifier);
    out.push({
      mid,
      trackId: client.trackIdForMid(mid) ?? null,
      trackIdentifier: s.trackIdentifier,
      framesDecoded: s.framesDecoded ?? 0,
      frameWidth: s.frameWidth ?? 0,
      frameHeight: s.frameHeight ?? 0,
      bytesReceived: s.bytesReceived ?? 0,
    });
  });
  return out;
};

setInterval(refreshStatus, 1000);
start();
