/**
 * sfu-remote.js: the remote tracks sfu-client.js has announced to the app, by m-line and by track
 * id, and how they survive a resume (a new peer connection brings new MediaStreamTracks).
 */

/**
 * Each announced track id gets a MediaStream of its own, holding just that track: a recycled
 * m-line reuses its MediaStreamTrack object for another track id, so the stream is per track id,
 * not per m-line. After a resume the same track id arrives on a new m-line with a new
 * MediaStreamTrack, which is swapped into the same stream: an element playing it continues.
 */
export class RemoteTracks {
  constructor() {
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
}
