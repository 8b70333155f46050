/**
 * app.js: the demo page. `/?room=NAME&name=NAME[&token=JWT]` joins a room, publishes camera and
 * microphone (watches only without them, or when the token does not grant publishing) and shows
 * one tile per remote participant, the active speaker's highlighted. Buttons mute the microphone
 * and the camera and share the screen; the chat goes over the reliable data channel. Each remote
 * video asks the server for its displayed size (`setQuality`), so small tiles get small layers.
 * After a network cut the client resumes by itself: the badge says "reconnecting…" until the new
 * peer connection is up, the tiles stay (each <video> plays the client's per-track MediaStream,
 * whose track the client swaps), and a failed resume offers to join again.
 * `window.sfuApp` and `window.sfuStats` are for tests.
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
const rejoinButton = document.getElementById('rejoin');
const localVideo = document.getElementById('local-video');
const localTile = document.getElementById('local-tile');
const connState = document.getElementById('conn-state');
const buttons = {
  audio: document.getElementById('mute-mic'),
  video: document.getElementById('mute-camera'),
  screen: document.getElementById('share-screen'),
};
const chatLog = document.getElementById('chat-log');
const chatForm = document.getElementById('chat-form');
const chatInput = document.getElementById('chat-input');
const chatSend = document.getElementById('chat-send');

const client = new SfuClient(wsUrl, { room, name, token });
/** @type {Map<string, {el: HTMLElement, media: Map<string, HTMLMediaElement>}>} tiles by
 * participant id; `media` holds one <video> or <audio> per track id */
const tiles = new Map();
let localStream = null;
let screenTile = null; // the local preview of our screen share
let lastError = '';
/** @type {{from: string, name: string, text: string, local: boolean}[]} */
const chatMessages = [];
const muted = { audio: false, video: false };

const state = { room, name, phase: 'starting', tiles, activeSpeaker: null, connection: 'new', resuming: false };
/** @type {{key: string, text: string, state: string, connectionState: string, at: number}[]} badge changes */
const connectionLog = [];

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle('error', isError);
}

function refreshStatus() {
  if (state.phase !== 'joined') return;
  if (client.state === 'reconnecting') {
    const attempts = client.resuming ? client.resuming.attempts : 0;
    setStatus(`connection lost, resuming as ${name}${attempts > 1 ? ` (attempt ${attempts})` : ''}…`, true);
    return;
  }
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
  for (const media of tile.media.values()) {
    sizeObserver.unobserve(media);
    media.srcObject = null;
  }
  tile.el.remove();
  tiles.delete(participantId);
}

/** Each remote video asks for the size it is shown at, in device pixels (0 when hidden). */
const sizeObserver = new ResizeObserver((entries) => {
  const scale = window.devicePixelRatio || 1;
  for (const { target } of entries) {
    const trackId = target.dataset.trackId;
    if (!trackId || !client.tracks.has(trackId)) continue;
    const rect = target.getBoundingClientRect();
    client.setQuality(trackId, { maxWidth: rect.width * scale, maxHeight: rect.height * scale });
  }
});

function onTrack({ trackId, participantId, kind, source, stream }) {
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
  // The client's stream of this track id (a recycled m-line reuses its MediaStreamTrack object, so
  // not a stream per m-line); after a resume the client swaps the new track into it.
  media.srcObject = stream;
  media.dataset.trackId = trackId;
  media.dataset.source = source || '';
  tile.media.set(trackId, media);
  tile.el.classList.toggle('multi', [...tile.media.values()].filter(isVideo).length > 1);
  if (kind === 'video') sizeObserver.observe(media);
}

function onTrackEnded({ trackId }) {
  for (const [participantId, tile] of tiles) {
    const media = tile.media.get(trackId);
    if (!media) continue;
    sizeObserver.unobserve(media);
    media.srcObject = null;
    media.remove();
    tile.media.delete(trackId);
    if (tile.media.size === 0) removeTile(participantId);
  }
}

/** Its publisher (or an operator) muted a track: the server forwards nothing, so dim its element. */
function markMuted(trackId, isMuted) {
  for (const tile of tiles.values()) {
    const media = tile.media.get(trackId);
    if (media) media.classList.toggle('muted', isMuted);
  }
}

/** Highlights the tile of the dominant speaker (the first of `active_speakers`). */
function onActiveSpeakers({ speakers }) {
  const speaker = speakers.length > 0 ? speakers[0].participantId : null;
  state.activeSpeaker = speaker;
  const own = client.participant ? client.participant.id : null;
  localTile.classList.toggle('speaking', speaker !== null && speaker === own);
  for (const [participantId, tile] of tiles) tile.el.classList.toggle('speaking', participantId === speaker);
}

/**
 * Shows the connection's state: connecting, connected, reconnecting (the client resumes after a
 * network cut, until its new peer connection is up; or ICE lost for a moment), closed.
 */
function showConnectionState({ state: clientState, connectionState }) {
  let text;
  let key;
  if (clientState === 'reconnecting') state.resuming = true;
  else if (clientState !== 'joined' || connectionState === 'connected') state.resuming = false;
  if (clientState === 'closed') [key, text] = ['closed', 'disconnected'];
  else if (state.resuming) [key, text] = ['reconnecting', 'reconnecting…'];
  else if (clientState !== 'joined') [key, text] = ['connecting', 'connecting…'];
  else if (connectionState === 'connected') [key, text] = ['connected', 'connected'];
  else if (connectionState === 'disconnected') [key, text] = ['reconnecting', 'reconnecting…'];
  else if (connectionState === 'failed') [key, text] = ['failed', 'connection lost'];
  else [key, text] = ['connecting', 'connecting…'];
  if (key !== state.connection) {
    connectionLog.push({ key, text, state: clientState, connectionState, at: Date.now() });
    if (connectionLog.length > 200) connectionLog.shift();
  }
  state.connection = key;
  connState.dataset.state = key;
  connState.textContent = text;
}

// ---- controls: mute, screen share, chat -------------------------------------------------------

/** Mutes our microphone (`audio`) or camera (`video`): the others get `track_muted`. */
function setMuted(kind, isMuted) {
  const local = client.localTracks().filter((t) => t.kind === kind && !t.source.startsWith('screen'));
  if (local.length === 0) throw new Error(`no ${kind} published`);
  for (const t of local) client.mute(t.track, isMuted);
  muted[kind] = isMuted;
  const button = buttons[kind];
  button.setAttribute('aria-pressed', String(isMuted));
  if (kind === 'audio') button.textContent = isMuted ? 'Unmute mic' : 'Mute mic';
  else button.textContent = isMuted ? 'Start camera' : 'Stop camera';
  if (kind === 'video') localTile.classList.toggle('muted', isMuted);
}

function showScreenButton(sharing) {
  buttons.screen.setAttribute('aria-pressed', String(sharing));
  buttons.screen.textContent = sharing ? 'Stop sharing' : 'Share screen';
}

async function shareScreen() {
  if (screenTile) return;
  const stream = await client.publishScreen();
  screenTile = document.createElement('figure');
  screenTile.className = 'tile local screen';
  const video = Object.assign(document.createElement('video'), { autoplay: true, muted: true, playsInline: true });
  video.srcObject = stream;
  const label = document.createElement('figcaption');
  label.textContent = `${name} (your screen)`;
  screenTile.append(video, label);
  localTile.after(screenTile);
  showScreenButton(true);
}

function onScreenShareEnded() {
  if (screenTile) {
    screenTile.querySelector('video').srcObject = null;
    screenTile.remove();
    screenTile = null;
  }
  showScreenButton(false);
}

async function toggleScreen() {
  buttons.screen.disabled = true;
  try {
    if (screenTile) await client.stopScreen();
    else await shareScreen();
  } catch (err) {
    console.warn(LOG, 'screen share failed:', err);
    lastError = `screen share: ${err.message || err}`;
    refreshStatus();
  } finally {
    buttons.screen.disabled = state.phase !== 'joined';
  }
}

function addChatLine(entry) {
  chatMessages.push(entry);
  const li = document.createElement('li');
  li.className = entry.local ? 'local' : 'remote';
  const who = document.createElement('b');
  who.textContent = entry.local ? `${entry.name} (you)` : entry.name;
  li.append(who, document.createTextNode(`: ${entry.text}`));
  chatLog.append(li);
  chatLog.scrollTop = chatLog.scrollHeight;
}

/** Sends a chat line to everyone over the reliable data channel. */
function sendChat(text) {
  const line = String(text).trim();
  if (!line) return;
  client.sendData({ type: 'chat', text: line });
  addChatLine({ from: client.participant ? client.participant.id : '', name, text: line, local: true });
}

function onData({ from, data, binary }) {
  if (binary || !data || data.type !== 'chat' || typeof data.text !== 'string') return;
  addChatLine({ from, name: participantName(from), text: data.text, local: false });
}

chatForm.addEventListener('submit', (e) => {
  e.preventDefault();
  try {
    sendChat(chatInput.value);
    chatInput.value = '';
  } catch (err) {
    lastError = `chat: ${err.message || err}`;
    refreshStatus();
  }
});
buttons.audio.addEventListener('click', () => setMuted('audio', !muted.audio));
buttons.video.addEventListener('click', () => setMuted('video', !muted.video));
buttons.screen.addEventListener('click', toggleScreen);

function isVideo(media) {
  return media instanceof HTMLVideoElement;
}

client.addEventListener('track', (e) => {
  onTrack(e.detail);
  if (e.detail.muted) markMuted(e.detail.trackId, true); // muted before we joined: no track_muted
});
client.addEventListener('trackresumed', (e) => {
  // the <video> plays e.detail.stream, which now holds the new track; (un)muted during the cut?
  markMuted(e.detail.trackId, e.detail.muted);
  console.info(LOG, `${e.detail.kind} ${e.detail.trackId} of ${participantName(e.detail.participantId)} is back`);
});
client.addEventListener('resumed', (e) => {
  console.info(LOG, `resumed after ${e.detail.resumedAt - e.detail.lostAt} ms`);
  refreshStatus();
});
client.addEventListener('trackended', (e) => onTrackEnded(e.detail));
client.addEventListener('trackunpublished', (e) => onTrackEnded(e.detail));
client.addEventListener('participantleft', (e) => { removeTile(e.detail.participantId); refreshStatus(); });
client.addEventListener('participantjoined', refreshStatus);
client.addEventListener('state', (e) => {
  showConnectionState(e.detail);
  if (e.detail.state === 'closed') {
    state.phase = 'closed';
    leaveButton.disabled = true;
    for (const el of [...Object.values(buttons), chatInput, chatSend]) el.disabled = true;
    if (e.detail.resumeFailed) {
      setStatus(`the connection was lost and could not be resumed (${e.detail.reason})`, true);
    } else {
      setStatus(e.detail.reason === 'left' ? 'left the room' : `disconnected (${e.detail.reason})`,
        e.detail.reason !== 'left');
    }
    rejoinButton.hidden = e.detail.reason === 'left';
  } else {
    refreshStatus();
  }
});
client.addEventListener('trackmuted', (e) => markMuted(e.detail.trackId, true));
client.addEventListener('trackunmuted', (e) => markMuted(e.detail.trackId, false));
client.addEventListener('activespeakers', (e) => onActiveSpeakers(e.detail));
/** Recent client events, for tests and for debugging from the console: `sfuApp.events('trackmuted')`. */
const eventLog = [];
for (const type of ['trackmuted', 'trackunmuted', 'qualitychanged', 'activespeakers', 'layersneeded']) {
  client.addEventListener(type, (e) => {
    eventLog.push({ type, at: Date.now(), ...e.detail });
    if (eventLog.length > 500) eventLog.shift();
  });
}
client.addEventListener('data', (e) => onData(e.detail));
client.addEventListener('screenshareended', onScreenShareEnded);
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
  rejoinButton.addEventListener('click', () => location.reload()); // a fresh client, camera and all
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
  localTile.dataset.participantId = client.participant.id;
  chatInput.disabled = false;
  chatSend.disabled = false;
  buttons.screen.disabled = !(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
  refreshStatus();
  if (!localStream) return;
  try {
    await client.publish(localStream, { source: 'camera' }); // video as three simulcast layers
    console.info(LOG, 'publishing camera and microphone');
    buttons.audio.disabled = localStream.getAudioTracks().length === 0;
    buttons.video.disabled = localStream.getVideoTracks().length === 0;
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
          source: media.dataset.source,
          videoWidth: media.videoWidth,
          videoHeight: media.videoHeight,
          readyState: media.readyState,
          muted: media.classList.contains('muted'),
          // frames this element presented: goes on rising across a resume (same element, same stream)
          framesShown: media.getVideoPlaybackQuality ? media.getVideoPlaybackQuality().totalVideoFrames : null,
        });
      }
    }
    return out;
  },
  /** Chat lines shown, oldest first: `{from, name, text, local}`. */
  chatMessages: () => chatMessages.map((m) => ({ ...m })),
  sendChat,
  /** Mutes (or unmutes) our microphone (`audio`) or camera (`video`), as the buttons do. */
  mute: setMuted,
  isMuted: (kind) => muted[kind],
  /** Participant id of the highlighted (dominant) speaker, or null. */
  activeSpeaker: () => state.activeSpeaker,
  /** Participant ids of the tiles highlighted as speaking (the local one included). */
  speakingTiles: () => [...document.querySelectorAll('.tile.speaking')].map((el) => el.dataset.participantId),
  connectionState: () => ({ key: state.connection, text: connState.textContent }),
  /** Every change of the connection badge, oldest first: `{key, text, state, connectionState, at}`. */
  connectionLog: () => connectionLog.map((entry) => ({ ...entry })),
  /** The status line's text. */
  status: () => statusLine.textContent,
  shareScreen: toggleScreen,
  /** Our published tracks: `{trackId, kind, source, muted, layers}`. */
  localTracks: () => client.localTracks().map(({ track, ...rest }) => rest),
  /** Client events seen (trackmuted, trackunmuted, qualitychanged, activespeakers, layersneeded). */
  events: (type) => eventLog.filter((e) => !type || e.type === type),
  /** The last `quality_changed` of each received track. */
  quality: () => Object.fromEntries(client.quality),
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
      packetsReceived: s.packetsReceived ?? 0,
    });
  });
  return out;
};

setInterval(refreshStatus, 1000);
start();
