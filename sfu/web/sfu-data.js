/**
 * sfu-data.js: the two data channels of a participant (docs/protocol.md, "Data channels"),
 * used by sfu-client.js.
 *
 * The server terminates the channels and relays each message to the other participants of the
 * room on the same kind of channel, with the sender's id attached:
 *   text   client → server  {"data": <JSON value>, "to": ["PA_…"]}   (`to` optional)
 *          server → client  {"from": "PA_…", "data": <the value>}
 *   binary client → server  raw bytes (to everyone else)
 *          server → client  one byte N, the sender's id (N ASCII bytes), then the payload
 */

const LOG = '[sfu-data]';
export const RELIABLE = 'sfu-reliable';
export const LOSSY = 'sfu-lossy';
/** Messages kept while a channel is still opening; beyond this, sendData throws. */
const MAX_PENDING = 256;

/**
 * The data channels of one peer connection. Create it before the first offer, so that the offer
 * carries the `m=application` section. `onData({from, data, reliable, binary})` gets every message.
 */
export class DataChannels {
  /**
   * @param {RTCPeerConnection} pc
   * @param {(msg: {from: string, data: any, reliable: boolean, binary: boolean}) => void} onData
   */
  constructor(pc, onData) {
    this.onData = onData;
    this._pending = { reliable: [], lossy: [] };
    this._suspended = false;
    this._open(pc);
  }

  /** The two channels on `pc`; messages queued meanwhile go out once each opens. */
  _open(pc) {
    /** @type {{reliable: RTCDataChannel, lossy: RTCDataChannel}} */
    this.channels = {
      reliable: pc.createDataChannel(RELIABLE, { ordered: true }),
      lossy: pc.createDataChannel(LOSSY, { ordered: false, maxRetransmits: 0 }),
    };
    for (const [kind, channel] of Object.entries(this.channels)) {
      channel.binaryType = 'arraybuffer';
      channel.onopen = () => {
        console.info(LOG, `${channel.label} open`);
        for (const payload of this._pending[kind].splice(0)) channel.send(payload);
      };
      channel.onclose = () => console.info(LOG, `${channel.label} closed`);
      channel.onmessage = (e) => this._receive(e.data, kind === 'reliable');
    }
  }

  /** The peer connection is gone and a resume will bring another: queue reliable messages until
   * then (lossy ones are dropped: they would be late anyway). */
  suspend() {
    this._suspended = true;
    this._pending.lossy = [];
  }

  /** After a resume: the channels again, on the new peer connection, before its first offer. */
  reopen(pc) {
    for (const channel of Object.values(this.channels)) {
      Object.assign(channel, { onopen: null, onclose: null, onmessage: null });
    }
    this._suspended = false;
    this._open(pc);
  }

  /** True once the reliable channel is open. */
  get open() {
    return this.channels.reliable.readyState === 'open';
  }

  /**
   * Sends `data` to the others in the room (or only to the participant ids in `to`).
   * An ArrayBuffer or typed array goes as a binary message (to everyone: the envelope of binary
   * messages has no recipients); anything else as JSON. While the channel opens, and while the
   * client resumes after a network cut, messages wait (up to MAX_PENDING; lossy ones are dropped
   * while resuming).
   * @param {any} data
   * @param {{reliable?: boolean, to?: string[]}} [options]
   */
  send(data, { reliable = true, to } = {}) {
    const kind = reliable ? 'reliable' : 'lossy';
    const channel = this.channels[kind];
    let payload;
    if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
      if (to) throw new Error('binary data goes to everyone: `to` is for JSON messages only');
      payload = data;
    } else {
      payload = JSON.stringify(to ? { data, to } : { data });
    }
    if (this._suspended && !reliable) return; // lossy while reconnecting: dropped
    if (channel.readyState === 'open' && !this._suspended) {
      channel.send(payload);
    } else if ((this._suspended || channel.readyState === 'connecting') && this._pending[kind].length < MAX_PENDING) {
      this._pending[kind].push(payload);
    } else {
      throw new Error(`data channel ${channel.label} is ${channel.readyState}`);
    }
  }

  close() {
    for (const channel of Object.values(this.channels)) channel.close();
  }

  _receive(raw, reliable) {
    if (typeof raw === 'string') {
      let envelope;
      try {
        envelope = JSON.parse(raw);
      } catch (err) {
        console.warn(LOG, 'unreadable data message', err);
        return;
      }
      this.onData({ from: envelope.from, data: envelope.data, reliable, binary: false });
      return;
    }
    const bytes = new Uint8Array(raw);
    const size = bytes[0];
    if (bytes.length < 1 + size) {
      console.warn(LOG, 'truncated binary data message');
      return;
    }
    const from = String.fromCharCode(...bytes.subarray(1, 1 + size));
    this.onData({ from, data: bytes.subarray(1 + size), reliable, binary: true });
  }
}
