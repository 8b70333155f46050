/**
 * sfu-local.js: the tracks sfu-client.js publishes: their transceivers, the publish() calls waiting
 * for the server's answer, and the simulcast layers the server wants sent (dynacast).
 */

import {
  negotiateNeededExtensions, sendEncodingsFor, setActiveLayers, sourceOf,
} from '/web/sfu-media.js';

const LOG = '[sfu-client]'; // part of the client's log: one prefix to filter by

/**
 * One track we send. `transceiver` is null while it must be recreated (after a rollback), and
 * `published` turns true once the server has answered an offer carrying it; `trackId` is the
 * server's id for it (from our own `track_published`), `layers` the rids the server wants.
 * @typedef {{track: MediaStreamTrack, stream: MediaStream, source: string, name: string,
 *            simulcast: boolean, transceiver: RTCRtpTransceiver|null, published: boolean,
 *            trackId: string|null, muted: boolean, muteUnsent?: boolean,
 *            layers: string[]|null}} Publication
 */

/**
 * One `sendonly` transceiver per track: `addTrack` could reuse one that receives. Simulcast
 * video gets the three layers' `sendEncodings` (only possible when the transceiver is added).
 * @param {RTCPeerConnection} pc
 * @param {Publication} pub
 */
function addSender(pc, pub) {
  const sendEncodings = sendEncodingsFor(pub.track, pub.simulcast);
  const transceiver = pc.addTransceiver(pub.track, { direction: 'sendonly', streams: [pub.stream],
    ...(sendEncodings ? { sendEncodings } : {}) });
  negotiateNeededExtensions(transceiver, pub.track.kind, Boolean(sendEncodings));
  return transceiver;
}

/** Our publications, in the order they were published, and what waits on them. */
export class LocalTracks {
  constructor() {
    /** @type {Publication[]} */
    this.list = [];
    this._pending = []; // {publications, resolve, reject}: publish() calls waiting for an answer
    this._layersWanted = new Map(); // track id -> layers_needed not yet applied (publication unknown)
  }

  /**
   * Publications for the tracks of `stream`, with their transceivers on `pc` (null while
   * reconnecting: the resumed peer connection gets them from restoreSenders). Resolves with the
   * transceivers once the server has answered an offer that carries them all.
   * @param {MediaStream} stream
   * @param {{source: string, simulcast: boolean, name: string}} options
   * @param {RTCPeerConnection|null} pc
   */
  add(stream, { source, simulcast, name }, pc) {
    const publications = stream.getTracks().map((track) => {
      const pub = { track, stream, source: sourceOf(track.kind, source), name, simulcast,
        transceiver: null, published: false, trackId: null, muted: false, layers: null };
      if (pc) pub.transceiver = addSender(pc, pub);
      return pub;
    });
    this.list.push(...publications);
    return new Promise((resolve, reject) => {
      this._pending.push({ publications, resolve, reject });
    });
  }

  /** The publication of `track`, if it is ours. */
  byTrack(track) {
    return this.list.find((p) => p.track === track);
  }

  /** The publication of a MediaStreamTrack or of a track id, if it is ours. */
  find(trackOrId) {
    return this.list.find((p) => p.track === trackOrId || (p.trackId !== null && p.trackId === trackOrId));
  }

  /**
   * Forgets the publication of `track` (a publish() still waiting for it rejects) and stops
   * sending it: its m-line turns `inactive`, for the next offer. Resolves false if it is not ours.
   */
  async remove(track) {
    const pub = this.byTrack(track);
    if (!pub) return false;
    this.list = this.list.filter((p) => p !== pub);
    this._pending = this._pending.filter((p) => {
      if (!p.publications.includes(pub)) return true;
      p.reject(new Error('unpublished before the server accepted it'));
      return false;
    });
    if (pub.transceiver) {
      await pub.transceiver.sender.replaceTrack(null);
      pub.transceiver.direction = 'inactive';
    }
    return true;
  }

  /** Those the server has not accepted yet that have a transceiver: the new tracks of an offer. */
  unpublished() {
    return this.list.filter((p) => !p.published && p.transceiver);
  }

  /** The server answered our offer: every publication with an m-line is accepted, and each
   * publish() whose publications all are resolves. */
  accepted() {
    for (const pub of this.list) {
      if (pub.transceiver && pub.transceiver.mid !== null) pub.published = true;
    }
    this._pending = this._pending.filter((p) => {
      if (!p.publications.every((pub) => pub.published)) return true;
      p.resolve(p.publications.map((pub) => pub.transceiver));
      return false;
    });
  }

  /**
   * Chromium keeps the header-extension ids of a rolled-back offer in its transceivers; offered
   * again after the server's offer fixed other ids, they collide ("A BUNDLE group contains a codec
   * collision for header extension id=3"). So stop those never-negotiated transceivers and add
   * fresh ones once the server's offer is answered.
   */
  dropRolledBackSenders() {
    for (const pub of this.list) {
      if (pub.published || !pub.transceiver || pub.transceiver.mid !== null) continue;
      pub.transceiver.stop();
      pub.transceiver = null;
    }
  }

  /** Gives fresh transceivers on `pc` to the publications left without one (a rollback, a resume). */
  restoreSenders(pc) {
    for (const pub of this.list) {
      if (!pub.transceiver) pub.transceiver = addSender(pc, pub);
    }
  }

  /** Stops the transceivers of publications the server never accepted and rejects their publish(). */
  abandonUnpublished(err) {
    for (const pub of this.list) {
      if (!pub.published && pub.transceiver) pub.transceiver.stop();
    }
    this.list = this.list.filter((pub) => pub.published);
    for (const p of this._pending) p.reject(err);
    this._pending = [];
  }

  /** The peer connection is gone: every publication is offered again on the next one. */
  detach() {
    for (const pub of this.list) {
      pub.transceiver = null;
      pub.published = false;
    }
  }

  /** Every publish() still waiting rejects, with an error of its own saying `reason`. */
  rejectPending(reason) {
    for (const p of this._pending) p.reject(new Error(reason));
    this._pending = [];
  }

  /**
   * The server announced one of our tracks (`track_published`): the publication on its mid (if
   * any), whether it took over its old track id after a resume, and the layers to send now.
   */
  announced(track) {
    const pub = this.list.find((p) => p.transceiver && p.transceiver.mid === track.mid);
    if (!pub) return null;
    const republished = pub.trackId === track.id;
    pub.trackId = track.id;
    let layers = this._layersWanted.get(track.id);
    this._layersWanted.delete(track.id);
    if (!layers && republished) layers = pub.layers; // the server only tells changes: apply the last
    return { pub, republished, layers };
  }

  /**
   * Dynacast: sends only the simulcast layers of `trackId` the server says anyone needs. Resolves
   * false when that track is not announced yet (the layers wait for its `track_published`).
   */
  async setLayers(trackId, layers) {
    const pub = this.list.find((p) => p.trackId === trackId);
    if (!pub || !pub.transceiver) {
      this._layersWanted.set(trackId, layers);
      return false;
    }
    pub.layers = layers;
    try {
      if (await setActiveLayers(pub.transceiver.sender, layers)) {
        console.info(LOG, `track ${trackId}: sending layers ${layers.join(',')}`);
      }
    } catch (err) {
      console.warn(LOG, `cannot turn layers of ${trackId} on or off:`, err);
    }
    return true;
  }
}
