/**
 * sfu-negotiation.js: the offers and answers sfu-client.js exchanges with the server on its current
 * peer connection: perfect negotiation, the client being the polite peer (docs/protocol.md).
 */

const LOG = '[sfu-client]'; // part of the client's log: one prefix to filter by
/** How long offers after our first wait for the server's first offer, when one is due. */
const SERVER_OFFER_WAIT_MS = 5000;

/**
 * We offer only for our own changes (a publication, an unpublish, data channels), and answer each
 * server offer, rolling back an offer of ours that crossed it. The async methods run in the
 * client's queue, so no two overlap.
 */
export class Negotiation {
  /**
   * @param {{pc: () => (RTCPeerConnection|null), ready: () => boolean,
   *          local: import('/web/sfu-local.js').LocalTracks,
   *          remote: import('/web/sfu-remote.js').RemoteTracks,
   *          send: (msg: object) => boolean, fail: (code: string, what: string, err: any) => void,
   *          enqueue: (fn: () => any) => Promise<any>}} hooks
   *   `pc` the current peer connection, `ready` whether we may offer (joined), the client's local
   *   and remote tracks, and its `_send`, `_fail` and `_enqueue`.
   */
  constructor({ pc, ready, local, remote, send, fail, enqueue }) {
    Object.assign(this, { _pc: pc, _ready: ready, _local: local, _remote: remote, _send: send,
      _fail: fail, _enqueue: enqueue });
    this._wanted = false; // something to (re)offer once signaling is stable
    this._failed = false; // our last offer could not be made: wait for a change before retrying
    this._seq = 0; // our offers carry `id: offer-N`, so an error can name the one it refuses
    this._serverOfferDue = null; // timer while the server's first offer (others' tracks) is due
    this._offeredOnPc = false; // our first offer on the current peer connection went out
  }

  /** Something changed that the server must hear of: offer at the next maybeOffer(). */
  want() {
    this._wanted = true;
  }

  /**
   * A fresh peer connection. `serverOfferDue`: the room has tracks, so the server will offer us
   * the others' tracks right after answering our first offer. An offer of ours crossing it would
   * be rolled back, and Chromium keeps the header-extension ids of a rolled-back offer for its mids
   * ("RTP extension ID reassignment not supported" when the server's offer uses other ids for the
   * same mid, as it does before any media was negotiated). So offers after the first wait for
   * that server offer (or a timeout).
   */
  start(serverOfferDue) {
    this._offeredOnPc = false;
    if (!serverOfferDue) return;
    this._serverOfferDue = setTimeout(() => {
      this._serverOfferDue = null;
      this._enqueue(() => this.maybeOffer());
    }, SERVER_OFFER_WAIT_MS);
  }

  /** The peer connection is gone: nothing is due on it any more. */
  stop() {
    clearTimeout(this._serverOfferDue);
    this._serverOfferDue = null;
    this._wanted = false;
    this._failed = false;
  }

  /** Sends an offer if we have unpublished or changed transceivers and signaling is stable. */
  async maybeOffer() {
    const pc = this._pc();
    if (!pc || !this._ready() || pc.signalingState !== 'stable') return;
    if (this._serverOfferDue !== null && this._offeredOnPc) return; // see start()
    const unpublished = this._local.unpublished();
    if (!this._wanted && (unpublished.length === 0 || this._failed)) return;
    this._wanted = false;
    try {
      await pc.setLocalDescription();
    } catch (err) {
      if (pc !== this._pc()) return;
      // Retried on the next change (publish, unpublish, server offer), not on every negotiationneeded.
      this._failed = true;
      this._fail('offer_failed', 'cannot make our offer', err);
      return;
    }
    this._failed = false;
    const tracks = {};
    for (const pub of unpublished) {
      if (pub.transceiver.mid === null) continue;
      tracks[pub.transceiver.mid] = pub.name ? { source: pub.source, name: pub.name } : { source: pub.source };
    }
    console.info(LOG, 'sending offer; new tracks', JSON.stringify(tracks));
    this._seq += 1;
    this._offeredOnPc = true;
    this._send({ type: 'offer', id: `offer-${this._seq}`, sdp: pc.localDescription.sdp, tracks });
  }

  /** A server offer: roll back our own outstanding offer if any (we are polite), then answer. */
  async onServerOffer(msg) {
    const pc = this._pc();
    if (!pc) return;
    this._remote.setServerMids(msg.mids);
    this._failed = false;
    clearTimeout(this._serverOfferDue);
    this._serverOfferDue = null;
    if (pc.signalingState === 'have-local-offer') {
      console.info(LOG, 'offer collision: rolling back our offer, answering the server first');
      await pc.setLocalDescription({ type: 'rollback' });
      this._local.dropRolledBackSenders();
      this._wanted = true;
    }
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      await pc.setLocalDescription();
      if (pc !== this._pc()) return; // dropped meanwhile (connection lost)
      this._send({ type: 'answer', sdp: pc.localDescription.sdp });
      this._remote.serverOfferApplied(pc);
    } catch (err) {
      if (pc !== this._pc()) return;
      this._fail('sdp_refused', 'cannot apply the server offer', err);
      if (pc.signalingState === 'have-remote-offer') await pc.setLocalDescription({ type: 'rollback' });
    }
    this._local.restoreSenders(this._pc());
    await this.maybeOffer();
  }

  /** The server's answer to our offer: the publications it carried are accepted. */
  async onServerAnswer(msg) {
    const pc = this._pc();
    if (!pc || pc.signalingState !== 'have-local-offer') {
      console.warn(LOG, 'answer ignored in signaling state', pc && pc.signalingState);
      return;
    }
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    } catch (err) {
      if (pc !== this._pc()) return;
      this._fail('sdp_refused', 'cannot apply the server answer', err);
      return;
    }
    this._local.accepted();
    await this.maybeOffer();
  }

  /** Whether the `error` message `msg` refuses our offer, still outstanding. */
  refuses(msg) {
    const pc = this._pc();
    return msg.id === `offer-${this._seq}` && Boolean(pc) && pc.signalingState === 'have-local-offer';
  }

  /**
   * The server refused our offer (bad_sdp, forbidden) and kept its previous state: go back to it,
   * and give up the publications it carried (their publish() calls reject).
   */
  async abandonRefusedOffer(msg) {
    await this._pc().setLocalDescription({ type: 'rollback' });
    this._local.abandonUnpublished(Object.assign(new Error(`offer refused: ${msg.message}`), { code: msg.code }));
  }
}
