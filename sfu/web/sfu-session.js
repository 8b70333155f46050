/**
 * sfu-session.js: the base class of SfuClient (sfu-client.js): its state, the server's messages
 * and the life of its connection: the peer connection, losing and resuming it, closing.
 */

import { DataChannels } from '/web/sfu-data.js';
import { LocalTracks } from '/web/sfu-local.js';
import { Negotiation } from '/web/sfu-negotiation.js';
import { RemoteTracks } from '/web/sfu-remote.js';
import { ATTEMPT_TIMEOUT_MS, FINAL_CLOSE_CODES, LossWatch, resumeWithBackoff } from '/web/sfu-resume.js';
import { RoomState } from '/web/sfu-room.js';
import { Signaling, closeReason } from '/web/sfu-signaling.js';

const LOG = '[sfu-client]';

/**
 * @typedef {import('/web/sfu-room.js').Participant} Participant
 * @typedef {import('/web/sfu-room.js').TrackInfo} TrackInfo
 */

/**
 * What an SfuClient is, apart from the methods an app calls: the public state below, kept current
 * from the server's messages, and the private parts those methods share. Apps use SfuClient.
 */
export class SfuSession extends EventTarget {
  /** Options as SfuClient documents them, defaults applied. */
  constructor(url, { room, name, token, iceServers, data, autoResume, resumeTimeoutMs }) {
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
    const emit = (type, detail) => this._emit(type, detail);
    this._room = new RoomState({ emit, ownId: () => (this.participant ? this.participant.id : null),
      ownTrackPublished: (track) => this._onOwnTrackPublished(track),
      trackGone: (trackId) => this._onTrackGone(trackId) });
    /** @type {Map<string, Participant>} the other participants in the room */
    this.participants = this._room.participants;
    /** @type {Map<string, TrackInfo>} every track published in the room, by track id */
    this.tracks = this._room.tracks;
    /** @type {Map<string, object>} the last `qualitychanged` detail of each received track */
    this.quality = this._room.quality;
    /** @type {{participantId: string, trackId: string, level: number}[]} loudest first */
    this.activeSpeakers = [];
    /** @type {DataChannels|null} */
    this.data = null;

    this._signaling = new Signaling({ onMessage: (data) => this._onMessage(data),
      onClose: (e) => this._onSocketClosed(e), onFailure: (err) => this._fail('client', 'signaling failed', err) });
    this._joinWaiter = null;
    this._qualityAsked = new Map(); // track id -> the last set_quality sent (JSON), to send changes only
    this._draining = false; // the server said `draining`: its close is final
    this._resuming = null; // {lostAt, reason, attempts} while reconnecting
    this._lossWatch = new LossWatch((reason) => this._connectionLost(reason));
    this._local = new LocalTracks(); // the tracks we publish
    this._remote = new RemoteTracks(emit, (trackId) => this.tracks.get(trackId));
    this._negotiation = new Negotiation({ pc: () => this.pc, ready: () => this.state === 'joined',
      local: this._local, remote: this._remote, send: (msg) => this._send(msg),
      fail: (code, what, err) => this._fail(code, what, err), enqueue: (fn) => this._enqueue(fn) });
  }

  // ---- messages from the server -------------------------------------------------------------

  async _onMessage(data) {
    const msg = JSON.parse(data); // a parse error is reported by _enqueue
    switch (msg.type) {
      case 'joined': return this._onJoined(msg);
      case 'participant_joined': return this._room.participantJoined(msg.participant);
      case 'participant_left': return this._room.participantLeft(msg.participant_id);
      case 'track_published': return this._room.trackPublished(msg.track);
      case 'track_unpublished': return this._room.trackUnpublished(msg.track_id, msg.participant_id);
      case 'track_muted':
      case 'track_unmuted': return this._room.trackMuted(msg.track_id, msg.participant_id, msg.type === 'track_muted');
      case 'quality_changed': return this._room.qualityChanged(msg);
      case 'layers_needed': return this._onLayersNeeded(msg.track_id, msg.layers || []);
      case 'active_speakers':
        this.activeSpeakers = (msg.speakers || []).map((s) => ({ participantId: s.participant_id,
          trackId: s.track_id, level: s.level }));
        return this._emit('activespeakers', { speakers: this.activeSpeakers });
      case 'draining':
        console.warn(LOG, `server draining: connections close in ${msg.deadline_s} s`);
        this._draining = true; // its close is final: no resume
        return this._emit('draining', { deadlineS: msg.deadline_s });
      case 'offer': return this._negotiation.onServerOffer(msg);
      case 'answer': return this._negotiation.onServerAnswer(msg);
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
    this._room.joined(msg);
    this._startPeerConnection(msg);
    if (this._wantData) {
      // Before our first offer, so that it carries the m=application section. Offered on the next
      // turn: a publish() right after join() then goes in the same offer.
      this.data = new DataChannels(this.pc, (d) => this._emit('data', { ...d,
        participant: this.participants.get(d.from) }));
      this._negotiation.want();
      setTimeout(() => this._enqueue(() => this._negotiation.maybeOffer()), 0);
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
    const pc = new RTCPeerConnection({ iceServers: this.iceServers ?? msg.ice_servers ?? [],
      bundlePolicy: 'max-bundle' });
    this.pc = pc;
    pc.onicecandidate = (e) => {
      if (this.state !== 'joined') return;
      this._send({ type: 'candidate', candidate: e.candidate ? e.candidate.toJSON() : null });
    };
    // We offer only for our own changes (Negotiation.want); this event just prompts a check.
    pc.onnegotiationneeded = () => this._enqueue(() => this._negotiation.maybeOffer());
    pc.ontrack = (e) => this._remote.onTrack(e);
    pc.onconnectionstatechange = () => {
      console.info(LOG, 'connection state', pc.connectionState);
      this._emit('state', { state: this.state, connectionState: pc.connectionState });
    };
    this._lossWatch.watch(pc);
    this._negotiation.start(this.tracks.size > 0); // the server offers us the others' tracks
    this._signaling.startPing();
  }

  /** The server announced one of our tracks: its id, pending mute and layers (sfu-local.js).
   * Returns whether it was republished under its old id after a resume. */
  _onOwnTrackPublished(track) {
    const own = this._local.announced(track);
    if (!own) return false;
    if (own.pub.muted || own.pub.muteUnsent) { // muted early, or (un)muted while reconnecting
      own.pub.muteUnsent = !this._send({ type: 'mute', track_id: track.id, muted: own.pub.muted });
    }
    if (own.layers) this._onLayersNeeded(track.id, own.layers);
    return own.republished;
  }

  /** Dynacast: `layersneeded` once our track sends only those layers (sfu-local.js). */
  async _onLayersNeeded(trackId, layers) {
    if (await this._local.setLayers(trackId, layers)) this._emit('layersneeded', { trackId, layers });
  }

  /** A track is unpublished (or went while we were away): stop showing it and asking for it. */
  _onTrackGone(trackId) {
    this._remote.unpublished(trackId);
    this._qualityAsked.delete(trackId);
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
    if (this._negotiation.refuses(msg)) await this._negotiation.abandonRefusedOffer(msg);
    this._emit('error', detail);
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
    console.warn(LOG, `connection lost (${reason}): resuming`);
    this._dropConnection();
    this._resuming = { lostAt, reason, attempts: 0 };
    this._setState('reconnecting', reason);
    await resumeWithBackoff({ progress: this._resuming, timeoutMs: this.resumeTimeoutMs, watch: this._lossWatch,
      active: () => this.state === 'reconnecting', attempt: (timeoutMs) => this._resumeOnce(timeoutMs),
      dropAttempt: () => this._dropConnection(), giveUp: (why) => this._close(why, true) });
  }

  /** One attempt: a socket, `join` with `resume`; resolves with `joined`, rejects otherwise. */
  async _resumeOnce(timeoutMs) {
    await this._signaling.open(this.url, timeoutMs);
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
    this._signaling.drop();
    this._signaling.stopPing();
    this._negotiation.stop();
    this._signaling.restartQueue();
    const pc = this.pc;
    this.pc = null;
    if (pc) {
      Object.assign(pc, { onicecandidate: null, onnegotiationneeded: null, ontrack: null,
        onconnectionstatechange: null });
      pc.close();
    }
    if (this.data) this.data.suspend();
    this._local.detach();
    this._remote.suspend();
  }

  /** `joined` with `resumed`: the same participant on a fresh peer connection; publish again at once. */
  _onResumed(msg) {
    if (this.state !== 'reconnecting') return undefined; // left meanwhile
    this.resumeToken = msg.resume_token || this.resumeToken;
    this._room.catchUp(msg);
    this._startPeerConnection(msg);
    if (this.data) this.data.reopen(this.pc);
    this._local.restoreSenders(this.pc); // each republished track takes over its old track id (same source)
    this._remote.resumed();
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
    this._negotiation.want();
    return this._negotiation.maybeOffer(); // at once: the server waits up to 1 s for this first offer
  }

  // ---- plumbing -----------------------------------------------------------------------------

  /** The current WebSocket (sfu-signaling.js), or null. */
  get _ws() {
    return this._signaling.ws;
  }

  _enqueue(fn) {
    return this._signaling.enqueue(fn);
  }

  /** Logs a failure of this client and reports it with an `error` event. */
  _fail(code, what, err) {
    const message = String((err && err.message) || err);
    console.error(LOG, `${what}:`, message);
    this._emit('error', { code, message: `${what}: ${message}` });
  }

  /** Sends if the socket is open; returns whether it did. */
  _send(msg) {
    return this._signaling.send(msg);
  }

  _onSocketClosed(e) {
    if (this.state === 'closed') return;
    const reason = closeReason(e.code);
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
    this._signaling.stopPing();
    this._negotiation.stop();
    this._local.rejectPending(reason);
    if (this.pc) this.pc.close();
    if (this.data) this.data.close();
    if (wasReconnecting) this._signaling.drop();
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
