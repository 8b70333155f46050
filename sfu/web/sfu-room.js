/**
 * sfu-room.js: what sfu-client.js knows of its room: the other participants, every published track
 * and the quality we receive of each, kept current from the server's messages and after a resume.
 */

/**
 * @typedef {{id: string, name: string}} Participant
 * @typedef {{id: string, participant_id: string, kind: 'audio'|'video', source: string,
 *            name: string, mid?: string}} TrackInfo
 */

/** The room's participants and tracks; the client exposes these maps as its own. */
export class RoomState {
  /**
   * @param {{emit: (type: string, detail: object) => void, ownId: () => (string|null),
   *          ownTrackPublished: (track: TrackInfo) => boolean, trackGone: (trackId: string) => void}} hooks
   *   `ownId` our participant id once joined; `ownTrackPublished` takes over one of our tracks
   *   and says whether it was republished under its old id; `trackGone` runs before a track is
   *   forgotten.
   */
  constructor({ emit, ownId, ownTrackPublished, trackGone }) {
    Object.assign(this, { _emit: emit, _ownId: ownId, _ownTrackPublished: ownTrackPublished,
      _trackGone: trackGone });
    /** @type {Map<string, Participant>} the other participants in the room */
    this.participants = new Map();
    /** @type {Map<string, TrackInfo>} every track published in the room, by track id */
    this.tracks = new Map();
    /** @type {Map<string, object>} the last `qualitychanged` detail of each received track */
    this.quality = new Map();
  }

  /** The room as our `joined` describes it. */
  joined(msg) {
    for (const p of msg.participants || []) this.participants.set(p.id, p);
    for (const t of msg.tracks || []) this.tracks.set(t.id, t);
  }

  participantJoined(participant) {
    this.participants.set(participant.id, participant);
    this._emit('participantjoined', { participant });
  }

  participantLeft(participantId) {
    for (const t of [...this.tracks.values()]) {
      if (t.participant_id === participantId) this.trackUnpublished(t.id, participantId);
    }
    const participant = this.participants.get(participantId) || { id: participantId, name: '' };
    this.participants.delete(participantId);
    this._emit('participantleft', { participant, participantId });
  }

  trackPublished(track) {
    this.tracks.set(track.id, track);
    const ownId = this._ownId();
    const local = ownId !== null && track.participant_id === ownId;
    const republished = local && this._ownTrackPublished(track);
    this._emit('trackpublished', { track, local, republished });
  }

  trackUnpublished(trackId, participantId) {
    const info = this.tracks.get(trackId);
    if (!info) return; // already gone (participant_left after its track_unpublished)
    this._trackGone(trackId);
    this.tracks.delete(trackId);
    this.quality.delete(trackId);
    this._emit('trackunpublished', { trackId, participantId, track: info });
  }

  /** Its publisher (or an operator) muted or unmuted it; the m-line stays. */
  trackMuted(trackId, participantId, muted) {
    const info = this.tracks.get(trackId);
    if (info) info.muted = muted; // a track's `muted` stays current
    const detail = { trackId, participantId };
    if (muted) this._emit('trackmuted', detail);
    else this._emit('trackunmuted', detail);
  }

  qualityChanged(msg) {
    const detail = { trackId: msg.track_id, layer: msg.layer, width: msg.width, height: msg.height,
      paused: msg.paused, reason: msg.reason, estimateBps: msg.estimate_bps };
    this.quality.set(msg.track_id, detail);
    this._emit('qualitychanged', detail);
  }

  /** After a resume: tell the app what changed in the room while we were away. */
  catchUp(msg) {
    const own = this._ownId();
    const present = new Set((msg.participants || []).map((p) => p.id));
    const published = new Map((msg.tracks || []).map((t) => [t.id, t]));
    for (const [trackId, t] of [...this.tracks]) {
      if (!published.has(trackId) && t.participant_id !== own) this.trackUnpublished(trackId, t.participant_id);
    }
    for (const participantId of [...this.participants.keys()]) {
      if (!present.has(participantId)) this.participantLeft(participantId);
    }
    for (const p of msg.participants || []) {
      if (!this.participants.has(p.id)) this.participantJoined(p);
    }
    for (const t of published.values()) {
      if (t.participant_id === own) this.tracks.set(t.id, t); // ours: track_published follows our offer
      else if (!this.tracks.has(t.id)) this.trackPublished(t);
    }
  }
}
