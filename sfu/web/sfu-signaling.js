/**
 * sfu-signaling.js: the WebSocket sfu-client.js signals over (docs/protocol.md, Transport): one
 * current socket at a time, its messages handled one after the other, pings and close reasons.
 */

const LOG = '[sfu-client]'; // part of the client's log: one prefix to filter by
const PROTOCOL_VERSION = 1;
const PING_INTERVAL_MS = 20000;
/** Why the server closed the socket, by WebSocket close code (docs/protocol.md, Transport). */
const CLOSE_REASONS = {
  1000: 'closed', 1001: 'server shutting down', 1008: 'rate limited', 1011: 'server error',
  1013: 'server restarting', 4001: 'removed by an operator', 4002: 'room closed',
  4003: 'resumed on another connection',
};

/** Why the server closed a socket with `code`, in words. */
export function closeReason(code) {
  return CLOSE_REASONS[code] || `disconnected (code ${code})`;
}

/**
 * The client's signaling socket. Messages received, and the SDP work they start, run in one queue,
 * so a handler never overlaps the next; `onFailure(err)` gets what a queued function threw.
 */
export class Signaling {
  /**
   * @param {{onMessage: (data: string) => any, onClose: (e: CloseEvent) => void,
   *          onFailure: (err: any) => void}} handlers for the current socket only
   */
  constructor({ onMessage, onClose, onFailure }) {
    Object.assign(this, { _onMessage: onMessage, _onClose: onClose, _onFailure: onFailure });
    /** @type {WebSocket|null} */
    this.ws = null;
    this._queue = Promise.resolve();
    this._pingTimer = null;
  }

  /** A new WebSocket, current from now on; resolves once open (rejects on close or timeout). Its
   * events are handled only while it is the current one, so a dropped socket cannot interfere. */
  open(url, timeoutMs) {
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (e) => this.enqueue(() => (ws === this.ws ? this._onMessage(e.data) : undefined));
    ws.onclose = (e) => { if (ws === this.ws) this._onClose(e); };
    ws.onerror = () => console.warn(LOG, 'websocket error');
    return new Promise((resolve, reject) => {
      const timer = timeoutMs > 0 ? setTimeout(() => reject(new Error('websocket open timed out')), timeoutMs) : null;
      ws.addEventListener('open', () => { clearTimeout(timer); resolve(ws); }, { once: true });
      ws.addEventListener('close', () => { clearTimeout(timer); reject(new Error('websocket closed before open')); },
        { once: true });
    });
  }

  /** Sends if the socket is open; returns whether it did. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...msg }));
    return true;
  }

  /** Runs `fn` after everything queued before it. */
  enqueue(fn) {
    this._queue = this._queue.then(fn).catch((err) => this._onFailure(err));
    return this._queue;
  }

  /**
   * Chromium leaves the promises of a closed peer connection pending: a handler waiting on one
   * would hold the queue for ever, so the next connection starts a queue of its own.
   */
  restartQueue() {
    this._queue = Promise.resolve();
  }

  /** A keep-alive `ping` every PING_INTERVAL_MS from now on (the server answers `pong`). */
  startPing() {
    clearInterval(this._pingTimer);
    this._pingTimer = setInterval(() => this.send({ type: 'ping' }), PING_INTERVAL_MS);
  }

  stopPing() {
    clearInterval(this._pingTimer);
  }

  /** Forgets the current socket, closing it without a word (the server holds us for a resume). */
  drop() {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onmessage = null;
    ws.onclose = null;
    if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close();
  }
}
