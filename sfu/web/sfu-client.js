/**
 * sfu-client.js: a browser client for the SFU's signaling protocol, version 1 (docs/protocol.md).
 *
 * One WebSocket and one RTCPeerConnection per participant. Either side may offer; the client is the
 * polite peer of perfect negotiation: when a server offer arrives while its own offer is
 * outstanding, it rolls its offer back, answers the server, then offers again.
 *
 * Its parts: sfu-session.js (state, the server's messages, the connection's life), sfu-signaling.js
 * (the WebSocket), sfu-negotiation.js (offers and answers), sfu-local.js and sfu-remote.js (tracks
 * sent and received), sfu-room.js (participants and tracks), sfu-resume.js, sfu-data.js, sfu-media.js.
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

import { captureScreen } from '/web/sfu-media.js';
import { RESUME_TIMEOUT_MS } from '/web/sfu-resume.js';
import { SfuSession } from '/web/sfu-session.js';

const LOG = '[sfu-client]';

/**
 * The app's side of the client: what it may call. Its state (`state`, `participant`,
 * `participants`, `tracks`, `quality`, `activeSpeakers`, `pc`, `data`, `resumeToken`, `resumes`,
 * `lastResume`) is documented, and kept current, in sfu-session.js.
 */
export class SfuClient extends SfuSession {
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
    super(url, { room, name, token, iceServers, data, autoResume, resumeTimeoutMs });
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
    await this._signaling.open(this.url, 0);
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
    if (this.state !== 'joined' && this.state !== 'reconnecting') throw new Error(`publish() in state ${this.state}`);
    // while reconnecting, the resumed peer connection gets the transceivers (_onResumed)
    const done = this._local.add(stream, { source, simulcast, name }, this.state === 'joined' ? this.pc : null);
    this._negotiation.want();
    this._enqueue(() => this._negotiation.maybeOffer());
    return done;
  }

  /**
   * Stops sending `track`: its m-line becomes `inactive` in a new offer. (The protocol has no
   * explicit unpublish message; the server sees the direction change.)
   * @param {MediaStreamTrack} track
   */
  async unpublish(track) {
    if (!(await this._local.remove(track))) return;
    this._negotiation.want();
    this._enqueue(() => this._negotiation.maybeOffer());
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
    const streams = new Set(this._local.list.filter((p) => p.source.startsWith('screen')).map((p) => p.stream));
    for (const stream of streams) {
      stream.getTracks().forEach((t) => t.stop()); // `ended` does not fire for our own stop()
      await this._onScreenEnded(stream);
    }
  }

  /** Unpublishes a screen capture once, whichever of its tracks ended first. */
  async _onScreenEnded(stream) {
    const pubs = this._local.list.filter((p) => p.stream === stream);
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
    const pub = this._local.byTrack(oldTrack);
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
    const pub = this._local.find(trackOrId);
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
    return this._local.list.map((p) => ({ trackId: p.trackId, track: p.track, kind: p.track.kind,
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
    return this._remote.serverMids.get(mid);
  }
}
