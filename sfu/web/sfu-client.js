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
 * layersneeded, activespeakers, data, screenshareended, draining, error, state.
 */

import { DataChannels } from '/web/sfu-data.js';
import {
  captureScreen, negotiateNeededExtensions, sendEncodingsFor, setActiveLayers, sourceOf,
} from '/web/sfu-media.js';

const LOG = '[sfu-client]';
const PROTOCOL_VERSION = 1;
const PING_INTERVAL_MS = 20000;
/** How long offers after our first wait for the server's first offer, when one is due. */
const SERVER_OFFER_WAIT_MS = 5000;
/** Why the server closed the socket, by WebSocket close code (docs/protocol.md, Transport). */
const CLOSE_REASONS = {
  1000: 'closed', 1001: 'server shutting down', 4001: 'removed by an operator', 4002: 'room closed',
};

/**
 * One track we send. `transceiver` is null while it must be recreated (after a rollback), and
 * `published` turns true once the server has answered an offer carrying it; `trackId` is the
 * server's id for it (from our own `track_published`), `layers` the rids the server wants.
 * @typedef {{track: MediaStreamTrack, stream: MediaStream, source: string, name: string,
 *            simulcast: boolean, transceiver: RTCRtpTransceiver|null, published: boolean,
 *            trackId: string|null, muted: boolean, layers: string[]|null}} Publication
 * @typedef {{id: string, name: string}} Participant
 * @typedef {{id: string, participant_id: string, kind: 'audio'|'video', source: string,
 *            name: string, mid?: string}} TrackInfo
 */

export class SfuClient extends EventTarget {
  /**
   * @param {string} url WebSocket URL of the server, e.g. `ws://127.0.0.1:8080/ws`.
   * @param {{room: string, name?: string, token?: string, iceServers?: RTCIceServer[],
   *          data?: boolean}} options
   *   `iceServers` overrides the list the server sends in `joined` (which is the default);
   *   `data: false` opens no data channels (then `sendData` throws).
   */
  constructor(url, { room, name, token, iceServers, data = true } = {}) {
    super();
    Object.assign(this, { url, room, name, token, iceServers });
    this._wantData = data;
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
    /** @type {Map<string, object>} the last `qualitychanged` detail of each received track */
    this.quality = new Map();
    /** @type {{participantId: string, trackId: string, level: number}[]} loudest first */
    this.activeSpeakers = [];
    /** @type {DataChannels|null} */
    this.data = null;

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
    this._serverOfferDue = null; // timer while the server's first offer (others' tracks) is due
    this._pingTimer = null;
    this._joinWaiter = null;
    this._qualityAsked = new Map(); // track id -> the last set_quality sent (JSON), to send changes only
    this._layersWanted = new Map(); // track id -> layers_needed not yet applied (publication unknown)
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
   * which could reuse a transceiver that receives someone else's track). Video goes as three
   * simulcast layers unless `simulcast: false` or the capture is smaller than 640x360.
   * Resolves with the transceivers once the server has answered the offer that carries them.
   * @param {MediaStream} stream
   * @param {{source?: 'camera'|'microphone'|'screen'|'screen_audio', simulcast?: boolean,
   *          name?: string}} [options]
   */
  async publish(stream, { source = 'camera', simulcast = true, name = '' } = {}) {
    if (this.state !== 'joined') throw new Error(`publish() in state ${this.state}`);
    const publications = stream.getTracks().map((track) => {
      const pub = { track, stream, source: sourceOf(track.kind, source), name, simulcast,
        transceiver: null, published: false, trackId: null, muted: false, layers: null };
      pub.transceiver = this._addSender(pub);
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
    if (pub.trackId) this._send({ type: 'mute', track_id: pub.trackId, muted: pub.muted });
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
    this._qualityAsked.set(trackId, key);
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
        return this._emit('trackmuted', { trackId: msg.track_id, participantId: msg.participant_id });
      case 'track_unmuted':
        return this._emit('trackunmuted', { trackId: msg.track_id, participantId: msg.participant_id });
      case 'quality_changed': return this._onQualityChanged(msg);
      case 'layers_needed': return this._onLayersNeeded(msg.track_id, msg.layers || []);
      case 'active_speakers':
        this.activeSpeakers = (msg.speakers || []).map((s) => ({ participantId: s.participant_id,
          trackId: s.track_id, level: s.level }));
        return this._emit('activespeakers', { speakers: this.activeSpeakers });
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
    if (this._wantData) {
      // Before our first offer, so that it carries the m=application section. Offered on the next
      // turn: a publish() right after join() then goes in the same offer.
      this.data = new DataChannels(this.pc, (d) => this._emit('data', { ...d,
        participant: this.participants.get(d.from) }));
      this._offerWanted = true;
      setTimeout(() => this._enqueue(() => this._maybeOffer()), 0);
    }
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
    const pub = local && this._publications.find((p) => p.transceiver && p.transceiver.mid === track.mid);
    if (pub) {
      pub.trackId = track.id;
      if (pub.muted) this._send({ type: 'mute', track_id: track.id, muted: true }); // muted early
      const layers = this._layersWanted.get(track.id);
      this._layersWanted.delete(track.id);
      if (layers) this._onLayersNeeded(track.id, layers);
    }
    this._emit('trackpublished', { track, local });
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
    for (const [mid, shown] of [...this._shownByMid]) {
      if (shown === trackId) this._endTrack(mid);
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
    if (this._serverOfferDue !== null && this._offerSeq > 0) return; // see _onJoined
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
      if (pub.transceiver.mid === null) continue;
      tracks[pub.transceiver.mid] = pub.name ? { source: pub.source, name: pub.name } : { source: pub.source };
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
    clearTimeout(this._serverOfferDue);
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
