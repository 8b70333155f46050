/**
 * sfu-remote.js: the remote tracks sfu-client.js announces to the app (`track`, `trackresumed`,
 * `trackended`), by m-line and by track id, and how they survive a resume (a new peer connection
 * brings new MediaStreamTracks).
 */

const LOG = '[sfu-client]'; // part of the client's log: one prefix to filter by

/**
 * Each announced track id gets a MediaStream of its own, holding just that track: a recycled
 * m-line reuses its MediaStreamTrack object for another track id, so the stream is per track id,
 * not per m-line. After a resume the same track id arrives on a new m-line with a new
 * MediaStreamTrack, which is swapped into the same stream: an element playing it continues.
 */
export class RemoteTracks {
  /**
   * @param {(type: string, detail: object) => void} emit dispatches one of the client's events
   * @param {(trackId: string) => (object|undefined)} infoOf the room's TrackInfo of a track id
   */
  constructor(emit, infoOf) {
    this._emit = emit;
    this._infoOf = infoOf;
    /** @type {Map<string, string>} mid -> track id, from the server's latest offer */
    this.serverMids = new Map();
    this._endStaleOnServerOffer = false; // after a resume: the server's first offer says what is back
    /** @type {Map<string, string>} mid -> track id, for the m-lines announced */
    this.byMid = new Map();
    /** @type {Map<string, {track: MediaStreamTrack, stream: MediaStream, mid: string|null}>}
     * by track id; `mid` is null from a resume until the track is back (stale) */
    this.byId = new Map();
  }

  /**
   * `trackId` is now on `mid` with `track`. Returns null when it was already announced there,
   * else `{stream, previousTrack}`: `previousTrack` is set when the track id comes back after a
   * resume (its stream now holds `track` instead), null for a new one.
   */
  show(mid, trackId, track) {
    if (this.byMid.get(mid) === trackId) return null;
    this.byMid.set(mid, trackId);
    const before = this.byId.get(trackId);
    if (before && before.mid === null) {
      before.stream.removeTrack(before.track);
      before.stream.addTrack(track);
      this.byId.set(trackId, { track, stream: before.stream, mid });
      return { stream: before.stream, previousTrack: before.track };
    }
    const stream = new MediaStream([track]);
    this.byId.set(trackId, { track, stream, mid });
    return { stream, previousTrack: null };
  }

  /** The m-line no longer carries its track: returns the track id it had (undefined if none). */
  endMid(mid) {
    const trackId = this.byMid.get(mid);
    this.byMid.delete(mid);
    if (trackId !== undefined) this.byId.delete(trackId);
    return trackId;
  }

  /** The peer connection is gone: every track is stale until the next one brings it back. */
  suspend() {
    this.serverMids = new Map();
    this.byMid.clear();
    for (const entry of this.byId.values()) entry.mid = null;
  }

  isStale(trackId) {
    const entry = this.byId.get(trackId);
    return Boolean(entry) && entry.mid === null;
  }

  /** Forgets the stale track ids and returns them. */
  dropStale() {
    const stale = [...this.byId].filter(([, entry]) => entry.mid === null).map(([trackId]) => trackId);
    for (const trackId of stale) this.byId.delete(trackId);
    return stale;
  }

  dropStaleOne(trackId) {
    if (this.isStale(trackId)) this.byId.delete(trackId);
  }

  // ---- announcing to the app ----------------------------------------------------------------

  /** A server offer arrives: what each of its m-lines carries (its `mids`), before it is applied. */
  setServerMids(mids) {
    this.serverMids = new Map(Object.entries(mids || {}));
  }

  /** `ontrack` fires while the server's offer is applied, after its `mids` were stored. */
  onTrack(e) {
    const mid = e.transceiver.mid;
    const trackId = this.serverMids.get(mid);
    console.info(LOG, `ontrack mid=${mid} kind=${e.track.kind} -> ${trackId || 'unknown track'}`);
    if (trackId) this._announce(mid, trackId, e.transceiver);
  }

  /** After each server offer on `pc`: announce mids that now carry a new track, end those that
   * lost theirs; the first after a resume also ends the tracks that did not come back. */
  serverOfferApplied(pc) {
    for (const [mid, shown] of [...this.byMid]) {
      if (this.serverMids.get(mid) !== shown) this._endMid(mid);
    }
    for (const [mid, trackId] of this.serverMids) {
      if (this.byMid.get(mid) === trackId) continue;
      const tr = pc.getTransceivers().find((t) => t.mid === mid);
      if (tr) this._announce(mid, trackId, tr);
    }
    if (this._endStaleOnServerOffer) {
      // the first server offer after a resume carries every track we still receive
      this._endStaleOnServerOffer = false;
      for (const trackId of this.dropStale()) this._emitEnded(trackId, null);
    }
  }

  /** Resumed on a new peer connection: its first server offer settles which tracks are back. */
  resumed() {
    this._endStaleOnServerOffer = this.byId.size > 0;
  }

  /** `trackId` was unpublished: end it, on its m-line or (gone while we were away) stale. */
  unpublished(trackId) {
    for (const [mid, shown] of [...this.byMid]) {
      if (shown === trackId) this._endMid(mid);
    }
    if (this.isStale(trackId)) {
      this.dropStaleOne(trackId);
      this._emitEnded(trackId, null);
    }
  }

  /** Announces the track a mid now carries: `track`, or `trackresumed` for one the app had before
   * a resume (its stream now holds the new MediaStreamTrack). */
  _announce(mid, trackId, transceiver) {
    if (this.byMid.get(mid) === trackId) return;
    if (this.byMid.has(mid)) this._endMid(mid);
    const track = transceiver.receiver.track;
    const { stream, previousTrack } = this.show(mid, trackId, track);
    const info = this._infoOf(trackId);
    const detail = { trackId, participantId: info ? info.participant_id : undefined,
      kind: info ? info.kind : track.kind, source: info ? info.source : undefined,
      muted: Boolean(info && info.muted), track, stream, mid };
    if (previousTrack) this._emit('trackresumed', { ...detail, previousTrack });
    else this._emit('track', detail);
  }

  /** The m-line stays (Chromium only mutes its track); we just stop announcing it. */
  _endMid(mid) {
    this._emitEnded(this.endMid(mid), mid);
  }

  _emitEnded(trackId, mid) {
    const info = this._infoOf(trackId);
    this._emit('trackended', { trackId, participantId: info ? info.participant_id : undefined, mid });
  }
}
