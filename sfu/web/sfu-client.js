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
 *   client.addEventListener('data', (e) => console.log(e.detail.from, e.detail.data));
 *   await client.join();
 *   await client.publish(await navigator.mediaDevices.getUserMedia({ video: true, audio: true }));
 *   client.sendData({ chat: 'hello' });                    // reliable, to everyone else
 *   client.setQuality(trackId, { maxWidth: 320, maxHeight: 180 });  // a small tile
 *   client.mute(myVideoTrackId, true);
 *   await client.publishScreen();
 *
 * Camera video is published as three simulcast layers (rids q, h, f at 1/4, 1/2 and full size)
 * unless `publish(stream, {simulcast: false})` or the capture is smaller than 640x360; the server
 * says which layers anyone needs (`layers_needed`) and the others are turned off (dynacast).
 *
 * Events (CustomEvent, data in `detail`): joined, participantjoined, participantleft,
 * trackpublished, trackunpublished, track, trackended, trackmuted, trackunmuted, qualitychanged,
 * layersneeded, activespeakers, data, screenshareended, draining, error, state, resumed,
 * trackresumed.
 *
 * Resume after a network cut (docs/protocol.md, "Resuming"; triggers and backoff in
 * sfu-resume.js): `state` goes `joined` -> `reconnecting` -> `joined` (detail.reason 'resumed',
 * then a `resumed` event), or -> `closed` with detail.resumeFailed when the server no longer holds
 * us (`resume_failed`) or no attempt got through within `resumeTimeoutMs`: join afresh with a new
 * SfuClient. Meanwhile the client keeps its publications (republished on the new peer connection
 * under the same track ids, mute and dynacast layers kept), queues reliable data messages (lossy
 * ones are dropped) and keeps every remote track the app was given: each comes back as a
 * `trackresumed` event (same trackId, the new MediaStreamTrack in `track`, the dead one in
 * `previousTrack`), and the MediaStream given in `track`/`trackresumed` (one per track id, made by
 * this client) has its track swapped in place, so a <video> playing it continues by itself.
 */

import { DataChannels } from '/web/sfu-data.js';
import {
  captureScreen, negotiateNeededExtensions, sendEncodingsFor, setActiveLayers, sourceOf,
} from '/web/sfu-media.js';
import { RemoteTracks } from '/web/sfu-remote.js';
import {
  ATTEMPT_TIMEOUT_MS, FINAL_CLOSE_CODES, LossWatch, RESUME_TIMEOUT_MS, backoffDelayMs,
} from '/web/sfu-resume.js';

const LOG = '[sfu-client]';
const PROTOCOL_VERSION = 1;
const PING_INTERVAL_MS = 20000;
/** How long offers after our first wait for the server's first offer, when one is due. */
const SERVER_OFFER_WAIT_MS = 5000;
/** Why the server closed the socket, by WebSocket close code (docs/protocol.md, Transport). */
const CLOSE_REASONS = {
  1000: 'closed', 1001: 'server shutting down', 1008: 'rate limited', 1011: 'server error',
  1013: 'server restarting', 4001: 'removed by an operator', 4002: 'room closed',
  4003: 'resumed on another connection',
};

/**
 * One track we send. `transceiver` is null while it must be recreated (after a rollback), and
 * `published` turns true once the server has answered an offer carrying it; `trackId` is the
 * server's id for it (from our own `track_published`), `layers` the rids the server wants.
 * @typedef {{track: MediaStreamTrack, stream: MediaStream, source: string, name: string,
 *            simulcast: boolean, transceiver: RTCRtpTransceiver|null, published: boolean,
 *            trackId: string|null, muted: boolean, muteUnsent?: boolean,
 *            layers: string[]|null}} Publication
 * @typedef {{id: string, name: string}} Participant
 * @typedef {{id: string, participant_id: string, kind: 'audio'|'video', source: string,
 *            name: string, mid?: string}} TrackInfo
 */

export class SfuClient extends EventTarget {
  /**
   * @param {string} url WebSocket URL of the server, e.g. `ws://127.0.0.1:8080/ws`.
   * @param {{room: string, name?: string, token?: string, iceServers?: RTCIceServer[],
   *          data?: boolean, autoResume?: boolean, resumeTimeoutMs?: number}} options
   *   `iceServers` overrides the list the server sends in `joined` (which is the default);
   *   `data: false` opens no data channels (then `sendData` throws); `autoResume: false` closes
   *   on a network cut instead of resuming; `resumeTimeoutMs` bounds the attempts (30 s).
   */
  constructor(url, { room, name, token, iceServers, data = true, autoResume = true,
    resumeTimeoutMs = RESUME_TIMEOUT_MS } = {}) {
    super();
    Object.assign(this, { url, room, name, token, iceServers, autoResume, resumeTimeoutMs });
    this._wantData = data;
    /** @type {'new'|'connecting'|'joined'|'reconnecting'|'closed'} */
    this.state = 'new';
    /** @type {string|null} the `resume_token` of our `joined` */
    this.resumeToken = null;
    /** How often this client resumed, and its last resume: `{lostAt, resumedAt, attempts, reason}`
     * (times from Date.now()). */
    this.resumes = 0;
    this.lastResume = null;
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    /** @type {Participant|null} this client's own participant, once joined */
    this.participant = null;
    /** @type {Map<string, Participant>} the other participants in the room */
    this.participants = new Map();
    /** @type {Map<string, TrackInfo>} every track published in the room, by track id */
    this.tracks = new Map();
    /** @type {Map<string, object>} the last `qualitychanged` detail of each received track */
    this.quality = new Map();
    /** @type {{participantId: string, trackId: string, level: number}[]} loudest first */
    this.activeSpeakers = [];
    /** @type {DataChannels|null} */
    this.data = null;

    this._ws = null;
    this._queue = Promise.resolve(); // serializes message handling and SDP work
    this._serverMids = new Map(); // mid -> track id, from the server's latest offer
    this._remote = new RemoteTracks(); // the remote tracks announced with `track`
    /** @type {Publication[]} our tracks, in the order they were published */
    this._publications = [];
    this._pendingPublishes = []; // {publications, resolve, reject} waiting for an answer
    this._offerWanted = false; // something to (re)offer once signaling is stable
    this._offerFailed = false; // our last offer could not be made: wait for a change before retrying
    this._offerSeq = 0; // our offers carry `id: offer-N`, so an error can name the one it refuses
    this._serverOfferDue = null; // timer while the server's first offer (others' tracks) is due
    this._pingTimer = null;
    this._joinWaiter = null;
    this._qualityAsked = new Map(); // track id -> the last set_quality sent (JSON), to send changes only
    this._layersWanted = new Map(); // track id -> layers_needed not yet applied (publication unknown)
    this._offeredOnPc = false; // our first offer on the current peer connection went out
    this._endStaleOnServerOffer = false; // after a resume: the server's first offer says what is back
    this._draining = false; // the server said `draining`: its close is final
    this._resuming = null; // {lostAt, reason, attempts} while reconnecting
    this._lossWatch = new LossWatch((reason) => this._connectionLost(reason));
  }

  /** While reconnecting: `{lostAt, reason, attempts}` (lostAt from Date.now()), else null. */
  get resuming() {
    return this.state === 'reconnecting' ? { ...this._resuming } : null;
  }

  /** Connects, sends `join`, and resolves with the `joined` message (rejects on error). */
  async join() {
    if (this.state !== 'new') throw new Error(`join() in state ${this.state}`);
    this._setState('connecting');
    const joined = new Promise((resolve, reject) => { this._joinWaiter = { resolve, reject }; });
    await this._openSocket(0);
    // JSON.stringify leaves out the undefined fields.
    this._send({ type: 'join', room: this.room, name: this.name || undefined,
      token: this.token || undefined });
    return joined;
  }

  /** A new WebSocket, current from now on; resolves once open (rejects on close or timeout). Its
   * events are handled only while it is the current one, so a dropped socket cannot interfere. */
  _openSocket(timeoutMs) {
    const ws = new WebSocket(this.url);
    this._ws = ws;
    ws.onmessage = (e) => this._enqueue(() => (ws === this._ws ? this._onMessage(e.data) : undefined));
    ws.onclose = (e) => { if (ws === this._ws) this._onSocketClosed(e); };
    ws.onerror = () => console.warn(LOG, 'websocket error');
    return new Promise((resolve, reject) => {
      const timer = timeoutMs > 0 ? setTimeout(() => reject(new Error('websocket open timed out')), timeoutMs) : null;
      ws.addEventListener('open', () => { clearTimeout(timer); resolve(ws); }, { once: true });
      ws.addEventListener('close', () => { clearTimeout(timer); reject(new Error('websocket closed before open')); },
        { once: true });
    });
  }

  /**
   * Publishes every track of `stream`, one `sendonly` transceiver per track (never `addTrack`,
   * which could reuse a transceiver that receives someone else's track). Video goes as three
   * simulcast layers unless `simulcast: false` or the capture is smaller than 640x360.
   * Resolves with the transceivers once the server has answered the offer that carries them.
   * @param {MediaStream} stream
   * @param {{source?: 'camera'|'microphone'|'screen'|'screen_audio', simulcast?: boolean,
   *          name?: string}} [options]
   */
  async publish(stream, { source = 'camera', simulcast = true, name = '' } = {}) {
    if (this.state !== 'joined' && this.state !== 'reconnecting') throw new Error(`publish() in state ${this.state}`);
    const publications = stream.getTracks().map((track) => {
      const pub = { track, stream, source: sourceOf(track.kind, source), name, simulcast,
        transceiver: null, published: false, trackId: null, muted: false, layers: null };
      // while reconnecting, the resumed peer connection gets its transceiver (_restoreSenders)
      if (this.state === 'joined') pub.transceiver = this._addSender(pub);
      return pub;
    });
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
    this._pendingPublishes = this._pendingPublishes.filter((p) => {
      if (!p.publications.includes(pub)) return true;
      p.reject(new Error('unpublished before the server accepted it'));
      return false;
    });
    if (pub.transceiver) {
      await pub.transceiver.sender.replaceTrack(null);
      pub.transceiver.direction = 'inactive';
    }
    this._offerWanted = true;
    this._enqueue(() => this._maybeOffer());
  }

  /**
   * Shares a screen (window, tab) picked by the user: its video as source `screen` (and its audio,
   * if the browser gives one, as `screen_audio`), beside the camera. When the browser's own "stop
   * sharing" ends the capture, the tracks are unpublished and `screenshareended` fires.
   * Resolves with the captured stream once published; stop it with `stopScreen()`.
   * @param {{audio?: boolean, simulcast?: boolean, name?: string}} [options]
   */
  async publishScreen({ audio = true, simulcast = false, name = 'screen' } = {}) {
    const stream = await captureScreen({ audio });
    for (const track of stream.getTracks()) {
      track.addEventListener('ended', () => this._onScreenEnded(stream), { once: true });
    }
    try {
      await this.publish(stream, { source: 'screen', simulcast, name });
    } catch (err) {
      stream.getTracks().forEach((t) => t.stop());
      throw err;
    }
    return stream;
  }

  /** Stops sharing the screen (every track published with a `screen*` source). */
  async stopScreen() {
    const streams = new Set(this._publications.filter((p) => p.source.startsWith('screen')).map((p) => p.stream));
    for (const stream of streams) {
      stream.getTracks().forEach((t) => t.stop()); // `ended` does not fire for our own stop()
      await this._onScreenEnded(stream);
    }
  }

  /** Unpublishes a screen capture once, whichever of its tracks ended first. */
  async _onScreenEnded(stream) {
    const pubs = this._publications.filter((p) => p.stream === stream);
    if (pubs.length === 0) return;
    console.info(LOG, 'screen share ended');
    pubs.forEach((pub) => pub.track.stop());
    await Promise.all(pubs.map((pub) => this.unpublish(pub.track))); // each leaves the list at once
    this._emit('screenshareended', { stream, trackIds: pubs.map((p) => p.trackId) });
  }

  /**
   * Sends another track in place of a published one (switching camera), without renegotiation.
   * @param {MediaStreamTrack} oldTrack
   * @param {MediaStreamTrack} newTrack
   */
  async replaceTrack(oldTrack, newTrack) {
    const pub = this._publications.find((p) => p.track === oldTrack);
    if (!pub) throw new Error('replaceTrack(): that track is not published');
    if (newTrack.kind !== oldTrack.kind) throw new Error('replaceTrack(): not the same kind');
    newTrack.enabled = !pub.muted;
    if (pub.transceiver) await pub.transceiver.sender.replaceTrack(newTrack);
    pub.track = newTrack;
  }

  /**
   * Mutes (or unmutes) one of our published tracks, by its track id or its MediaStreamTrack:
   * the track is disabled (black or silent) and the server stops forwarding it to everyone.
   * @param {string|MediaStreamTrack} trackOrId
   * @param {boolean} muted
   */
  mute(trackOrId, muted) {
    const pub = this._publications.find((p) => p.track === trackOrId || (p.trackId !== null && p.trackId === trackOrId));
    if (!pub) throw new Error(`mute(): ${trackOrId} is not one of our tracks`);
    pub.muted = Boolean(muted);
    pub.track.enabled = !pub.muted;
    // unsent while reconnecting: sent when the track is republished (_onTrackPublished)
    pub.muteUnsent = !(pub.trackId && this._send({ type: 'mute', track_id: pub.trackId, muted: pub.muted }));
  }

  /**
   * Our published tracks: `{trackId, track, kind, source, muted, layers}` (`trackId` is null until
   * the server announced the track).
   */
  localTracks() {
    return this._publications.map((p) => ({ trackId: p.trackId, track: p.track, kind: p.track.kind,
      source: p.source, muted: p.muted, layers: p.layers }));
  }

  /**
   * Asks for at most this size (or this simulcast layer, 0 the lowest) of a received video track:
   * the tile's size in device pixels, so a small tile gets a small layer. Sent only when it changes.
   * @param {string} trackId
   * @param {{maxWidth?: number, maxHeight?: number, layer?: number}} [limits]
   */
  setQuality(trackId, { maxWidth, maxHeight, layer } = {}) {
    const int = (x) => (x === undefined || x === null ? undefined : Math.max(0, Math.round(x)));
    const msg = { type: 'set_quality', track_id: trackId, max_width: int(maxWidth),
      max_height: int(maxHeight), layer: int(layer) };
    const key = JSON.stringify(msg);
    if (this._qualityAsked.get(trackId) === key) return;
    this._qualityAsked.set(trackId, key); // sent again after a resume (_onResumed)
    this._send(msg);
  }

  /**
   * Sends `data` over the data channels to the others in the room, or only to the participant ids
   * in `to`: JSON for any JSON value, binary for an ArrayBuffer or typed array (always to
   * everyone). `reliable: false` uses the lossy channel. Others get a `data` event.
   * @param {any} data
   * @param {{reliable?: boolean, to?: string[]}} [options]
   */
  sendData(data, { reliable = true, to } = {}) {
    if (!this.data) throw new Error('sendData(): no data channels (not joined, or data: false)');
    this.data.send(data, { reliable, to });
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
      case 'track_muted': // its publisher (or an operator) muted it; the m-line stays
      case 'track_unmuted': {
        const info = this.tracks.get(msg.track_id);
        if (info) info.muted = msg.type === 'track_muted'; // a track's `muted` stays current
        const detail = { trackId: msg.track_id, participantId: msg.participant_id };
        return msg.type === 'track_muted' ? this._emit('trackmuted', detail) : this._emit('trackunmuted', detail);
      }
      case 'quality_changed': return this._onQualityChanged(msg);
      case 'layers_needed': return this._onLayersNeeded(msg.track_id, msg.layers || []);
      case 'active_speakers':
        this.activeSpeakers = (msg.speakers || []).map((s) => ({ participantId: s.participant_id,
          trackId: s.track_id, level: s.level }));
        return this._emit('activespeakers', { speakers: this.activeSpeakers });
      case 'draining':
        console.warn(LOG, `server draining: connections close in ${msg.deadline_s} s`);
        this._draining = true; // its close is final: no resume
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
    if (msg.resumed) return this._onResumed(msg);
    this.participant = msg.participant;
    this.resumeToken = msg.resume_token || null;
    for (const p of msg.participants || []) this.participants.set(p.id, p);
    for (const t of msg.tracks || []) this.tracks.set(t.id, t);
    this._startPeerConnection(msg);
    if (this._wantData) {
      // Before our first offer, so that it carries the m=application section. Offered on the next
      // turn: a publish() right after join() then goes in the same offer.
      this.data = new DataChannels(this.pc, (d) => this._emit('data', { ...d,
        participant: this.participants.get(d.from) }));
      this._offerWanted = true;
      setTimeout(() => this._enqueue(() => this._maybeOffer()), 0);
    }
    if (this.autoResume) this._lossWatch.start();
    console.info(LOG, `joined room ${msg.room} as ${msg.participant.id}`,
      `(${this.participants.size} others, ${this.tracks.size} tracks)`);
    this._setState('joined');
    this._emit('joined', msg);
    if (this._joinWaiter) this._joinWaiter.resolve(msg);
    this._joinWaiter = null;
    return undefined;
  }

  /** A fresh peer connection (at join, and at each resume) and what goes with it. */
  _startPeerConnection(msg) {
    this._createPeerConnection(this.iceServers ?? msg.ice_servers ?? []);
    this._lossWatch.watch(this.pc);
    this._offeredOnPc = false;
    clearInterval(this._pingTimer);
    this._pingTimer = setInterval(() => this._send({ type: 'ping' }), PING_INTERVAL_MS);
    if (this.tracks.size > 0) {
      // The server will offer us the others' tracks right after answering our first offer. An offer
      // of ours crossing it would be rolled back, and Chromium keeps the header-extension ids of a
      // rolled-back offer for its mids ("RTP extension ID reassignment not supported" when the
      // server's offer uses other ids for the same mid, as it does before any media was
      // negotiated). So offers after the first wait for that server offer (or a timeout).
      this._serverOfferDue = setTimeout(() => {
        this._serverOfferDue = null;
        this._enqueue(() => this._maybeOffer());
      }, SERVER_OFFER_WAIT_MS);
    }
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
    const pub = local && this._publications.find((p) => p.transceiver && p.transceiver.mid === track.mid);
    const republished = Boolean(pub) && pub.trackId === track.id; // after a resume: the same id
    if (pub) {
      pub.trackId = track.id;
      if (pub.muted || pub.muteUnsent) { // muted early, or (un)muted while reconnecting
        pub.muteUnsent = !this._send({ type: 'mute', track_id: track.id, muted: pub.muted });
      }
      let layers = this._layersWanted.get(track.id);
      this._layersWanted.delete(track.id);
      if (!layers && republished) layers = pub.layers; // the server only tells changes: apply the last
      if (layers) this._onLayersNeeded(track.id, layers);
    }
    this._emit('trackpublished', { track, local, republished });
  }

  _onQualityChanged(msg) {
    const detail = { trackId: msg.track_id, layer: msg.layer, width: msg.width, height: msg.height,
      paused: msg.paused, reason: msg.reason, estimateBps: msg.estimate_bps };
    this.quality.set(msg.track_id, detail);
    this._emit('qualitychanged', detail);
  }

  /** Dynacast: send only the simulcast layers the server says anyone needs. */
  async _onLayersNeeded(trackId, layers) {
    const pub = this._publications.find((p) => p.trackId === trackId);
    if (!pub || !pub.transceiver) {
      this._layersWanted.set(trackId, layers); // our track_published is still to come
      return;
    }
    pub.layers = layers;
    try {
      if (await setActiveLayers(pub.transceiver.sender, layers)) {
        console.info(LOG, `track ${trackId}: sending layers ${layers.join(',')}`);
      }
    } catch (err) {
      console.warn(LOG, `cannot turn layers of ${trackId} on or off:`, err);
    }
    this._emit('layersneeded', { trackId, layers });
  }

  _onTrackUnpublished(trackId, participantId) {
    const info = this.tracks.get(trackId);
    if (!info) return; // already gone (participant_left after its track_unpublished)
    for (const [mid, shown] of [...this._remote.byMid]) {
      if (shown === trackId) this._endTrack(mid);
    }
    if (this._remote.isStale(trackId)) { // gone while we were away
      this._remote.dropStaleOne(trackId);
      this._emitTrackEnded(trackId, null);
    }
    this.tracks.delete(trackId);
    this.quality.delete(trackId);
    this._qualityAsked.delete(trackId);
    this._emit('trackunpublished', { trackId, participantId, track: info });
  }

  /** A server offer: roll back our own outstanding offer if any (we are polite), then answer. */
  async _onServerOffer(msg) {
    const pc = this.pc;
    if (!pc) return;
    this._serverMids = new Map(Object.entries(msg.mids || {}));
    this._offerFailed = false;
    clearTimeout(this._serverOfferDue);
    this._serverOfferDue = null;
    if (pc.signalingState === 'have-local-offer') {
      console.info(LOG, 'offer collision: rolling back our offer, answering the server first');
      await pc.setLocalDescription({ type: 'rollback' });
      this._dropRolledBackSenders();
      this._offerWanted = true;
    }
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      await pc.setLocalDescription();
      if (pc !== this.pc) return; // dropped meanwhile (connection lost)
      this._send({ type: 'answer', sdp: pc.localDescription.sdp });
      this._reconcileMids();
      if (this._endStaleOnServerOffer) {
        // the first server offer after a resume carries every track we still receive
        this._endStaleOnServerOffer = false;
        for (const trackId of this._remote.dropStale()) this._emitTrackEnded(trackId, null);
      }
    } catch (err) {
      if (pc !== this.pc) return;
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
      if (pc !== this.pc) return;
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
    // A trickled candidate of a rolled-back offer may reach the server too late; harmless. A
    // refused resume is an outcome (the client closes, saying so), not a fault.
    (['bad_candidate', 'resume_failed'].includes(msg.code) ? console.warn : console.error)(LOG, 'server error', detail);
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
    if (this._serverOfferDue !== null && this._offeredOnPc) return; // see _startPeerConnection
    const unpublished = this._publications.filter((p) => !p.published && p.transceiver);
    if (!this._offerWanted && (unpublished.length === 0 || this._offerFailed)) return;
    this._offerWanted = false;
    try {
      await pc.setLocalDescription();
    } catch (err) {
      if (pc !== this.pc) return;
      // Retried on the next change (publish, unpublish, server offer), not on every negotiationneeded.
      this._offerFailed = true;
      this._fail('offer_failed', 'cannot make our offer', err);
      return;
    }
    this._offerFailed = false;
    const tracks = {};
    for (const pub of unpublished) {
      if (pub.transceiver.mid === null) continue;
      tracks[pub.transceiver.mid] = pub.name ? { source: pub.source, name: pub.name } : { source: pub.source };
    }
    console.info(LOG, 'sending offer; new tracks', JSON.stringify(tracks));
    this._offerSeq += 1;
    this._offeredOnPc = true;
    this._send({ type: 'offer', id: `offer-${this._offerSeq}`, sdp: pc.localDescription.sdp, tracks });
  }

  _settlePublishes() {
    this._pendingPublishes = this._pendingPublishes.filter((p) => {
      if (!p.publications.every((pub) => pub.published)) return true;
      p.resolve(p.publications.map((pub) => pub.transceiver));
      return false;
    });
  }

  /**
   * One `sendonly` transceiver per track: `addTrack` could reuse one that receives. Simulcast
   * video gets the three layers' `sendEncodings` (only possible when the transceiver is added).
   * @param {Publication} pub
   */
  _addSender(pub) {
    const sendEncodings = sendEncodingsFor(pub.track, pub.simulcast);
    const transceiver = this.pc.addTransceiver(pub.track, { direction: 'sendonly', streams: [pub.stream],
      ...(sendEncodings ? { sendEncodings } : {}) });
    negotiateNeededExtensions(transceiver, pub.track.kind, Boolean(sendEncodings));
    return transceiver;
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
      if (!pub.transceiver) pub.transceiver = this._addSender(pub);
    }
  }

  // ---- receiving ----------------------------------------------------------------------------

  /** `ontrack` fires while the server's offer is applied, after its `mids` were stored. */
  _onTrack(e) {
    const mid = e.transceiver.mid;
    const trackId = this._serverMids.get(mid);
    console.info(LOG, `ontrack mid=${mid} kind=${e.track.kind} -> ${trackId || 'unknown track'}`);
    if (trackId) this._showTrack(mid, trackId, e.transceiver);
  }

  /** After each server offer: announce mids that now carry a new track, end those that lost theirs. */
  _reconcileMids() {
    for (const [mid, shown] of [...this._remote.byMid]) {
      if (this._serverMids.get(mid) !== shown) this._endTrack(mid);
    }
    for (const [mid, trackId] of this._serverMids) {
      if (this._remote.byMid.get(mid) === trackId) continue;
      const tr = this.pc.getTransceivers().find((t) => t.mid === mid);
      if (tr) this._showTrack(mid, trackId, tr);
    }
  }

  /** Announces the track a mid now carries: `track`, or `trackresumed` for one the app had before
   * a resume (sfu-remote.js: its stream now holds the new MediaStreamTrack). */
  _showTrack(mid, trackId, transceiver) {
    if (this._remote.byMid.get(mid) === trackId) return;
    if (this._remote.byMid.has(mid)) this._endTrack(mid);
    const track = transceiver.receiver.track;
    const { stream, previousTrack } = this._remote.show(mid, trackId, track);
    const info = this.tracks.get(trackId);
    const detail = { trackId, participantId: info ? info.participant_id : undefined,
      kind: info ? info.kind : track.kind, source: info ? info.source : undefined,
      muted: Boolean(info && info.muted), track, stream, mid };
    if (previousTrack) this._emit('trackresumed', { ...detail, previousTrack });
    else this._emit('track', detail);
  }

  /** The m-line stays (Chromium only mutes its track); we just stop announcing it. */
  _endTrack(mid) {
    this._emitTrackEnded(this._remote.endMid(mid), mid);
  }

  _emitTrackEnded(trackId, mid) {
    const info = this.tracks.get(trackId);
    this._emit('trackended', { trackId, participantId: info ? info.participant_id : undefined, mid });
  }

  // ---- resuming after a network cut (docs/protocol.md, "Resuming"; sfu-resume.js) -----------

  /** The LossWatch, or a socket closed without a final code, says the connection is gone. */
  _connectionLost(reason) {
    if (this.state !== 'joined' || !this.autoResume) return; // without autoResume: as before, the
    // app sees the peer connection's state and a closed socket closes the client
    if (!this.resumeToken) { // a server without resume
      this._close(`connection lost: ${reason}`);
      return;
    }
    this._resume(reason).catch((err) => {
      this._fail('client', 'resuming failed', err);
      if (this.state === 'reconnecting') this._close(`resuming failed: ${err.message || err}`, true);
    });
  }

  /** Attempts (backoff in sfu-resume.js) until `joined` with `resumed`, `resume_failed` or the deadline. */
  async _resume(reason) {
    const lostAt = Date.now();
    const deadline = lostAt + this.resumeTimeoutMs;
    console.warn(LOG, `connection lost (${reason}): resuming`);
    this._dropConnection();
    this._resuming = { lostAt, reason, attempts: 0 };
    this._setState('reconnecting', reason);
    while (this.state === 'reconnecting') {
      if (Date.now() >= deadline) {
        this._close(`could not resume within ${Math.round(this.resumeTimeoutMs / 1000)} s`, true);
        return;
      }
      if (this._lossWatch.online) { // offline, an attempt would fail at once: wait for `online`
        this._resuming.attempts += 1;
        try {
          await this._resumeOnce(Math.min(ATTEMPT_TIMEOUT_MS, deadline - Date.now()));
          return; // _onResumed took over
        } catch (err) {
          if (this.state !== 'reconnecting') return;
          if (err.code === 'resume_failed') {
            this._close(`resume_failed: ${err.message}`, true);
            return;
          }
          console.info(LOG, `resume attempt ${this._resuming.attempts} failed: ${err.message}`);
          this._dropConnection(); // the socket, and whatever a half-done resume set up
        }
      }
      const waitMs = backoffDelayMs(Math.max(1, this._resuming.attempts));
      await this._lossWatch.waitBeforeRetry(Math.min(waitMs, Math.max(0, deadline - Date.now())));
    }
  }

  /** One attempt: a socket, `join` with `resume`; resolves with `joined`, rejects otherwise. */
  async _resumeOnce(timeoutMs) {
    await this._openSocket(timeoutMs);
    const joined = new Promise((resolve, reject) => { this._joinWaiter = { resolve, reject }; });
    this._send({ type: 'join', room: this.room, resume: this.resumeToken });
    let timer = null;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('no answer to the resume')), ATTEMPT_TIMEOUT_MS);
    });
    try {
      return await Promise.race([joined, late]);
    } finally {
      clearTimeout(timer);
      this._joinWaiter = null;
    }
  }

  /**
   * Forgets the socket and the peer connection without `leave` (the server holds us), and keeps
   * what the app was given: publications (their transceivers come back with the next peer
   * connection), data channels (suspended), remote tracks (marked to come back).
   */
  _dropConnection() {
    this._lossWatch.watch(null);
    this._dropSocket();
    clearInterval(this._pingTimer);
    clearTimeout(this._serverOfferDue);
    this._serverOfferDue = null;
    // Chromium leaves the promises of a closed peer connection pending: a handler waiting on one
    // would hold the queue for ever, so the next connection starts a queue of its own.
    this._queue = Promise.resolve();
    const pc = this.pc;
    this.pc = null;
    if (pc) {
      Object.assign(pc, { onicecandidate: null, onnegotiationneeded: null, ontrack: null,
        onconnectionstatechange: null });
      pc.close();
    }
    if (this.data) this.data.suspend();
    for (const pub of this._publications) {
      pub.transceiver = null;
      pub.published = false;
    }
    this._serverMids = new Map();
    this._remote.suspend();
    this._offerWanted = false;
    this._offerFailed = false;
  }

  _dropSocket() {
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onmessage = null;
    ws.onclose = null;
    if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close();
  }

  /** `joined` with `resumed`: the same participant on a fresh peer connection; publish again at once. */
  _onResumed(msg) {
    if (this.state !== 'reconnecting') return undefined; // left meanwhile
    this.resumeToken = msg.resume_token || this.resumeToken;
    this._catchUpWithRoom(msg);
    this._startPeerConnection(msg);
    if (this.data) this.data.reopen(this.pc);
    this._restoreSenders(); // each republished track takes over its old track id (same source)
    this._endStaleOnServerOffer = this._remote.byId.size > 0;
    for (const [trackId, key] of this._qualityAsked) {
      if (this.tracks.has(trackId)) this._send(JSON.parse(key)); // sent while away, or not
    }
    this.resumes += 1;
    this.lastResume = { ...this._resuming, resumedAt: Date.now() };
    const { attempts, lostAt, resumedAt } = this.lastResume;
    console.info(LOG, `resumed as ${this.participant.id} after ${resumedAt - lostAt} ms (${attempts} attempt(s))`);
    this._setState('joined', 'resumed');
    this._emit('resumed', { ...this.lastResume });
    if (this._joinWaiter) this._joinWaiter.resolve(msg);
    this._joinWaiter = null;
    this._offerWanted = true;
    return this._maybeOffer(); // at once: the server waits up to 1 s for this first offer
  }

  /** After a resume: tell the app what changed in the room while we were away. */
  _catchUpWithRoom(msg) {
    const own = this.participant.id;
    const present = new Set((msg.participants || []).map((p) => p.id));
    const published = new Map((msg.tracks || []).map((t) => [t.id, t]));
    for (const [trackId, t] of [...this.tracks]) {
      if (!published.has(trackId) && t.participant_id !== own) this._onTrackUnpublished(trackId, t.participant_id);
    }
    for (const participantId of [...this.participants.keys()]) {
      if (!present.has(participantId)) this._onParticipantLeft(participantId);
    }
    for (const p of msg.participants || []) {
      if (this.participants.has(p.id)) continue;
      this.participants.set(p.id, p);
      this._emit('participantjoined', { participant: p });
    }
    for (const t of published.values()) {
      if (t.participant_id === own) this.tracks.set(t.id, t); // ours: track_published follows our offer
      else if (!this.tracks.has(t.id)) this._onTrackPublished(t);
    }
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

  /** Sends if the socket is open; returns whether it did. */
  _send(msg) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN) return false;
    this._ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...msg }));
    return true;
  }

  _onSocketClosed(e) {
    if (this.state === 'closed') return;
    const reason = CLOSE_REASONS[e.code] || `disconnected (code ${e.code})`;
    if (this.state === 'reconnecting') { // an attempt's socket: the resume loop tries again
      if (this._joinWaiter) this._joinWaiter.reject(new Error(`websocket closed: ${reason}`));
      this._joinWaiter = null;
      return;
    }
    if (this.state === 'joined' && this.autoResume && !this._draining && !FINAL_CLOSE_CODES.has(e.code)) {
      this._connectionLost(`websocket closed: ${reason}`);
      return;
    }
    console.warn(LOG, `websocket closed: ${reason}`);
    if (this._joinWaiter) this._joinWaiter.reject(new Error(`websocket closed: ${reason}`));
    this._joinWaiter = null;
    this._close(reason);
  }

  /** Ends this client for good; `resumeFailed`: after a network cut it could not resume (join afresh). */
  _close(reason, resumeFailed = false) {
    const wasReconnecting = this.state === 'reconnecting';
    this._lossWatch.stop();
    clearInterval(this._pingTimer);
    clearTimeout(this._serverOfferDue);
    for (const p of this._pendingPublishes) p.reject(new Error(reason));
    this._pendingPublishes = [];
    if (this.pc) this.pc.close();
    if (this.data) this.data.close();
    if (wasReconnecting) this._dropSocket();
    else if (this._ws && this._ws.readyState === WebSocket.CONNECTING) this._ws.close();
    if (resumeFailed) console.warn(LOG, `closed: ${reason}`);
    this._setState('closed', reason, { resumeFailed });
  }

  _setState(state, reason, extra = {}) {
    this.state = state;
    this._emit('state', { state, reason, connectionState: this.pc ? this.pc.connectionState : 'new', ...extra });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
