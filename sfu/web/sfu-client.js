/**
 * sfu-client.js: a browser client for the SFU's signaling protocol, version 1 (docs/protocol.md).
 *
 * One WebSocket and one RTCPeerConnection per participant. Either side may offer; the client is the
 * polite peer of perfect negotiation: when a server offer arrives while its own offer is
 * outstanding, it rolls its offer back, answers the server, then offers again.
 *
 * Usage (no framework needed):
 *   import { SfuClient } from '/web/sfu-client.js';
 *   const client = new SfuClient('ws://host:port/ws', { room: 'demo', name: 'alice' });
 *   client.addEventListener('track', (e) => show(e.detail.track));
 *   await client.join();
 *   await client.publish(await navigator.mediaDevices.getUserMedia({ video: true, audio: true }));
 *
 * Events (CustomEvent, data in `detail`): joined, participantjoined, participantleft,
 * trackpublished, trackunpublished, track, trackended, trackmuted, trackunmuted, draining, error,
 * state.
 */

const LOG = '[sfu-client]';
const PROTOCOL_VERSION = 1;
const PING_INTERVAL_MS = 20000;
/** Why the server closed the socket, by WebSocket close code (docs/protocol.md, Transport). */
const CLOSE_REASONS = {
  1000: 'closed', 1001: 'server shutting down', 4001: 'removed by an operator', 4002: 'room closed',
};

/** The protocol's source of a track of `kind` published with the `source` option `option`. */
function sourceOf(kind, option) {
  const screen = String(option).startsWith('screen');
  if (kind === 'video') return screen ? 'screen' : 'camera';
  return screen ? 'screen_audio' : 'microphone';
}

/**
 * One track we send. `transceiver` is null while it must be recreated (after a rollback), and
 * `published` turns true once the server has answered an offer carrying it.
 * @typedef {{track: MediaStreamTrack, stream: MediaStream, source: string,
 *            transceiver: RTCRtpTransceiver|null, published: boolean}} Publication
 * @typedef {{id: string, name: string}} Participant
 * @typedef {{id: string, participant_id: string, kind: 'audio'|'video', source: string,
 *            name: string, mid?: string}} TrackInfo
 */

export class SfuClient extends EventTarget {
  /**
   * @param {string} url WebSocket URL of the server, e.g. `ws://127.0.0.1:8080/ws`.
   * @param {{room: string, name?: string, token?: string, iceServers?: RTCIceServer[]}} options
   *   `iceServers` overrides the list the server sends in `joined` (which is the default).
   */
  constructor(url, { room, name, token, iceServers } = {}) {
    super();
    Object.assign(this, { url, room, name, token, iceServers });
    /** @type {'new'|'connecting'|'joined'|'closed'} */
    this.state = 'new';
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    /** @type {Participant|null} this client's own participant, once joined */
    this.participant = null;
    /** @type {Map<string, Participant>} the other participants in the room */
    this.participants = new Map();
    /** @type {Map<string, TrackInfo>} every track published in the room, by track id */
    this.tracks = new Map();

    this._ws = null;
    this._queue = Promise.resolve(); // serializes message handling and SDP work
    this._serverMids = new Map(); // mid -> track id, from the server's latest offer
    this._shownByMid = new Map(); // mid -> track id announced with a `track` event
    /** @type {Publication[]} our tracks, in the order they were published */
    this._publications = [];
    this._pendingPublishes = []; // {publications, resolve, reject} waiting for an answer
    this._offerWanted = false; // something to (re)offer once signaling is stable
    this._offerFailed = false; // our last offer could not be made: wait for a change before retrying
    this._offerSeq = 0; // our offers carry `id: offer-N`, so an error can name the one it refuses
    this._pingTimer = null;
    this._joinWaiter = null;
  }

  /** Connects, sends `join`, and resolves with the `joined` message (rejects on error). */
  async join() {
    if (this.state !== 'new') throw new Error(`join() in state ${this.state}`);
    this._setState('connecting');
    const ws = new WebSocket(this.url);
    this._ws = ws;
    const joined = new Promise((resolve, reject) => { this._joinWaiter = { resolve, reject }; });
    ws.onmessage = (e) => this._enqueue(() => this._onMessage(e.data));
    ws.onclose = (e) => this._onSocketClosed(e);
    ws.onerror = () => console.warn(LOG, 'websocket error');
    await new Promise((resolve, reject) => {
      ws.addEventListener('open', resolve, { once: true });
      ws.addEventListener('close', () => reject(new Error('websocket closed before open')), { once: true });
    });
    // JSON.stringify leaves out the undefined fields.
    this._send({ type: 'join', room: this.room, name: this.name || undefined,
      token: this.token || undefined });
    return joined;
  }

  /**
   * Publishes every track of `stream`, one `sendonly` transceiver per track (never `addTrack`,
   * which could reuse a transceiver that receives someone else's track).
   * Resolves with the transceivers once the server has answered the offer that carries them.
   * @param {MediaStream} stream
   * @param {{source?: 'camera'|'microphone'|'screen'|'screen_audio'}} [options]
   */
  async publish(stream, { source = 'camera' } = {}) {
    if (this.state !== 'joined') throw new Error(`publish() in state ${this.state}`);
    const publications = stream.getTracks().map((track) => ({
      track,
      stream,
      source: sourceOf(track.kind, source),
      transceiver: this._addSender(track, stream),
      published: false,
    }));
    this._publications.push(...publications);
    const done = new Promise((resolve, reject) => {
      this._pendingPublishes.push({ publications, resolve, reject });
    });
    this._offerWanted = true;
    this._enqueue(() => this._maybeOffer());
    return done;
  }

  /**
   * Stops sending `track`: its m-line becomes `inactive` in a new offer. (The protocol has no
   * explicit unpublish message; the server sees the direction change.)
   * @param {MediaStreamTrack} track
   */
  async unpublish(track) {
    const pub = this._publications.find((p) => p.track === track);
    if (!pub) return;
    this._publications = this._publications.filter((p) => p !== pub);
    if (pub.transceiver) {
      await pub.transceiver.sender.replaceTrack(null);
      pub.transceiver.direction = 'inactive';
    }
    this._offerWanted = true;
    this._enqueue(() => this._maybeOffer());
  }

  /** Leaves the room: sends `leave`, closes the peer connection; the server closes the socket. */
  leave() {
    if (this.state === 'closed') return;
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      this._send({ type: 'leave' });
      setTimeout(() => ws.close(), 2000); // the server closes it first, normally
    }
    this._close('left');
  }

  /** Track id currently carried by a receiving m-line, per the server's latest offer. */
  trackIdForMid(mid) {
    return this._serverMids.get(mid);
  }

  // ---- messages from the server -------------------------------------------------------------

  async _onMessage(data) {
    const msg = JSON.parse(data); // a parse error is reported by _enqueue
    switch (msg.type) {
      case 'joined': return this._onJoined(msg);
      case 'participant_joined':
        this.participants.set(msg.participant.id, msg.participant);
        return this._emit('participantjoined', { participant: msg.participant });
      case 'participant_left': return this._onParticipantLeft(msg.participant_id);
      case 'track_published': return this._onTrackPublished(msg.track);
      case 'track_unpublished': return this._onTrackUnpublished(msg.track_id, msg.participant_id);
      case 'track_muted': // an operator stopped forwarding it; the m-line stays
        return this._emit('trackmuted', { trackId: msg.track_id, participantId: msg.participant_id });
      case 'track_unmuted':
        return this._emit('trackunmuted', { trackId: msg.track_id, participantId: msg.participant_id });
      case 'draining':
        console.warn(LOG, `server draining: connections close in ${msg.deadline_s} s`);
        return this._emit('draining', { deadlineS: msg.deadline_s });
      case 'offer': return this._onServerOffer(msg);
      case 'answer': return this._onServerAnswer(msg);
      case 'error': return this._onError(msg);
      case 'pong': return undefined;
      default: console.warn(LOG, 'unknown message type', msg.type);
    }
    return undefined;
  }

  _onJoined(msg) {
    this.participant = msg.participant;
    for (const p of msg.participants || []) this.participants.set(p.id, p);
    for (const t of msg.tracks || []) this.tracks.set(t.id, t);
    this._createPeerConnection(this.iceServers ?? msg.ice_servers ?? []);
    this._pingTimer = setInterval(() => this._send({ type: 'ping' }), PING_INTERVAL_MS);
    console.info(LOG, `joined room ${msg.room} as ${msg.participant.id}`,
      `(${this.participants.size} others, ${this.tracks.size} tracks)`);
    this._setState('joined');
    this._emit('joined', msg);
    if (this._joinWaiter) this._joinWaiter.resolve(msg);
    this._joinWaiter = null;
  }

  _onParticipantLeft(participantId) {
    for (const t of [...this.tracks.values()]) {
      if (t.participant_id === participantId) this._onTrackUnpublished(t.id, participantId);
    }
    const participant = this.participants.get(participantId) || { id: participantId, name: '' };
    this.participants.delete(participantId);
    this._emit('participantleft', { participant, participantId });
  }

  _onTrackPublished(track) {
    this.tracks.set(track.id, track);
    const local = this.participant !== null && track.participant_id === this.participant.id;
    this._emit('trackpublished', { track, local });
  }

  _onTrackUnpublished(trackId, participantId) {
    const info = this.tracks.get(trackId);
    if (!info) return; // already gone (participant_left after its track_unpublished)
    for (const [mid, shown] of [...this._shownByMid]) {
      if (shown === trackId) this._endTrack(mid);
    }
    this.tracks.delete(trackId);
    this._emit('trackunpublished', { trackId, participantId, track: info });
  }

  /** A server offer: roll back our own outstanding offer if any (we are polite), then answer. */
  async _onServerOffer(msg) {
    const pc = this.pc;
    if (!pc) return;
    this._serverMids = new Map(Object.entries(msg.mids || {}));
    this._offerFailed = false;
    if (pc.signalingState === 'have-local-offer') {
      console.info(LOG, 'offer collision: rolling back our offer, answering the server first');
      await pc.setLocalDescription({ type: 'rollback' });
      this._dropRolledBackSenders();
      this._offerWanted = true;
    }
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      await pc.setLocalDescription();
      this._send({ type: 'answer', sdp: pc.localDescription.sdp });
      this._reconcileMids();
    } catch (err) {
      this._fail('sdp_refused', 'cannot apply the server offer', err);
      if (pc.signalingState === 'have-remote-offer') await pc.setLocalDescription({ type: 'rollback' });
    }
    this._restoreSenders();
    await this._maybeOffer();
  }

  async _onServerAnswer(msg) {
    const pc = this.pc;
    if (!pc || pc.signalingState !== 'have-local-offer') {
      console.warn(LOG, 'answer ignored in signaling state', pc && pc.signalingState);
      return;
    }
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    } catch (err) {
      this._fail('sdp_refused', 'cannot apply the server answer', err);
      return;
    }
    for (const pub of this._publications) {
      if (pub.transceiver && pub.transceiver.mid !== null) pub.published = true;
    }
    this._settlePublishes();
    await this._maybeOffer();
  }

  async _onError(msg) {
    const detail = { code: msg.code, message: msg.message, id: msg.id };
    // A trickled candidate of a rolled-back offer may reach the server too late; harmless.
    (msg.code === 'bad_candidate' ? console.warn : console.error)(LOG, 'server error', detail);
    if (this._joinWaiter) {
      this._joinWaiter.reject(Object.assign(new Error(msg.message), detail));
      this._joinWaiter = null;
    }
    if (msg.id === `offer-${this._offerSeq}` && this.pc && this.pc.signalingState === 'have-local-offer') {
      // The server refused our offer (bad_sdp, forbidden) and kept its previous state: go back to
      // it, and give up the publications it carried (their publish() calls reject).
      await this.pc.setLocalDescription({ type: 'rollback' });
      this._abandonUnpublished(Object.assign(new Error(`offer refused: ${msg.message}`), { code: msg.code }));
    }
    this._emit('error', detail);
  }

  // ---- negotiation --------------------------------------------------------------------------

  _createPeerConnection(iceServers) {
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    pc.onicecandidate = (e) => {
      if (this.state !== 'joined') return;
      this._send({ type: 'candidate', candidate: e.candidate ? e.candidate.toJSON() : null });
    };
    // We offer only for our own changes, tracked with _offerWanted; this event just prompts a check.
    pc.onnegotiationneeded = () => this._enqueue(() => this._maybeOffer());
    pc.ontrack = (e) => this._onTrack(e);
    pc.onconnectionstatechange = () => {
      console.info(LOG, 'connection state', pc.connectionState);
      this._emit('state', { state: this.state, connectionState: pc.connectionState });
    };
  }

  /** Sends an offer if we have unpublished or changed transceivers and signaling is stable. */
  async _maybeOffer() {
    const pc = this.pc;
    if (!pc || this.state !== 'joined' || pc.signalingState !== 'stable') return;
    const unpublished = this._publications.filter((p) => !p.published && p.transceiver);
    if (!this._offerWanted && (unpublished.length === 0 || this._offerFailed)) return;
    this._offerWanted = false;
    try {
      await pc.setLocalDescription();
    } catch (err) {
      // Retried on the next change (publish, unpublish, server offer), not on every negotiationneeded.
      this._offerFailed = true;
      this._fail('offer_failed', 'cannot make our offer', err);
      return;
    }
    this._offerFailed = false;
    const tracks = {};
    for (const pub of unpublished) {
      if (pub.transceiver.mid !== null) tracks[pub.transceiver.mid] = { source: pub.source };
    }
    console.info(LOG, 'sending offer; new tracks', JSON.stringify(tracks));
    this._offerSeq += 1;
    this._send({ type: 'offer', id: `offer-${this._offerSeq}`, sdp: pc.localDescription.sdp, tracks });
  }

  _settlePublishes() {
    this._pendingPublishes = this._pendingPublishes.filter((p) => {
      if (!p.publications.every((pub) => pub.published)) return true;
      p.resolve(p.publications.map((pub) => pub.transceiver));
      return false;
    });
  }

  /** One `sendonly` transceiver per track: `addTrack` could reuse one that receives. */
  _addSender(track, stream) {
    return this.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  }

  /**
   * Chromium keeps the header-extension ids of a rolled-back offer in its transceivers; offered
   * again after the server's offer fixed other ids, they collide ("A BUNDLE group contains a codec
   * collision for header extension id=3"). So stop those never-negotiated transceivers and add
   * fresh ones once the server's offer is answered.
   */
  _dropRolledBackSenders() {
    for (const pub of this._publications) {
      if (pub.published || !pub.transceiver || pub.transceiver.mid !== null) continue;
      pub.transceiver.stop();
      pub.transceiver = null;
    }
  }

  /** Stops the transceivers of publications the server never accepted and rejects their publish(). */
  _abandonUnpublished(err) {
    for (const pub of this._publications) {
      if (!pub.published && pub.transceiver) pub.transceiver.stop();
    }
    this._publications = this._publications.filter((pub) => pub.published);
    for (const p of this._pendingPublishes) p.reject(err);
    this._pendingPublishes = [];
  }

  /** Gives fresh transceivers to the publications `_dropRolledBackSenders` left without one. */
  _restoreSenders() {
    for (const pub of this._publications) {
      if (!pub.transceiver) pub.transceiver = this._addSender(pub.track, pub.stream);
    }
  }

  // ---- receiving ----------------------------------------------------------------------------

  /** `ontrack` fires while the server's offer is applied, after its `mids` were stored. */
  _onTrack(e) {
    const mid = e.transceiver.mid;
    const trackId = this._serverMids.get(mid);
    console.info(LOG, `ontrack mid=${mid} kind=${e.track.kind} -> ${trackId || 'unknown track'}`);
    if (trackId) this._showTrack(mid, trackId, e.transceiver, e.streams[0]);
  }

  /** After each server offer: announce mids that now carry a new track, end those that lost theirs. */
  _reconcileMids() {
    for (const mid of [...this._shownByMid.keys()]) {
      if (this._serverMids.get(mid) !== this._shownByMid.get(mid)) this._endTrack(mid);
    }
    for (const [mid, trackId] of this._serverMids) {
      if (this._shownByMid.get(mid) === trackId) continue;
      const tr = this.pc.getTransceivers().find((t) => t.mid === mid);
      if (tr) this._showTrack(mid, trackId, tr, undefined);
    }
  }

  _showTrack(mid, trackId, transceiver, stream) {
    if (this._shownByMid.get(mid) === trackId) return;
    if (this._shownByMid.has(mid)) this._endTrack(mid);
    this._shownByMid.set(mid, trackId);
    const info = this.tracks.get(trackId);
    const track = transceiver.receiver.track;
    this._emit('track', {
      trackId,
      participantId: info ? info.participant_id : undefined,
      kind: info ? info.kind : track.kind,
      source: info ? info.source : undefined,
      track,
      stream: stream || new MediaStream([track]),
      mid,
    });
  }

  /** The m-line stays (Chromium only mutes its track); we just stop announcing it. */
  _endTrack(mid) {
    const trackId = this._shownByMid.get(mid);
    this._shownByMid.delete(mid);
    const info = this.tracks.get(trackId);
    this._emit('trackended', { trackId, participantId: info ? info.participant_id : undefined, mid });
  }

  // ---- plumbing -----------------------------------------------------------------------------

  _enqueue(fn) {
    this._queue = this._queue.then(fn).catch((err) => this._fail('client', 'signaling failed', err));
    return this._queue;
  }

  /** Logs a failure of this client and reports it with an `error` event. */
  _fail(code, what, err) {
    const message = String((err && err.message) || err);
    console.error(LOG, `${what}:`, message);
    this._emit('error', { code, message: `${what}: ${message}` });
  }

  _send(msg) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN) return;
    this._ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...msg }));
  }

  _onSocketClosed(e) {
    if (this.state === 'closed') return;
    const reason = CLOSE_REASONS[e.code] || `disconnected (code ${e.code})`;
    console.warn(LOG, `websocket closed: ${reason}`);
    if (this._joinWaiter) this._joinWaiter.reject(new Error(`websocket closed: ${reason}`));
    this._joinWaiter = null;
    this._close(reason);
  }

  _close(reason) {
    clearInterval(this._pingTimer);
    for (const p of this._pendingPublishes) p.reject(new Error(reason));
    this._pendingPublishes = [];
    if (this.pc) this.pc.close();
    if (this._ws && this._ws.readyState === WebSocket.CONNECTING) this._ws.close();
    this._setState('closed', reason);
  }

  _setState(state, reason) {
    this.state = state;
    this._emit('state', { state, reason, connectionState: this.pc ? this.pc.connectionState : 'new' });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
