/**
 * sfu-resume.js: when sfu-client.js decides its connection is lost, and how it paces its attempts
 * to resume (docs/protocol.md, "Resuming after a network cut").
 *
 * A connection counts as lost when any of these happens while joined:
 *  - the browser goes offline (`offline` event: Chromium fires it at once when the network goes);
 *  - the WebSocket closes with a code that is not final (see FINAL_CLOSE_CODES);
 *  - the peer connection goes `failed`, or stays `disconnected` for DISCONNECTED_RESUME_MS
 *    (only a peer connection that was connected once: one that never connects is not a cut).
 * The client then resumes: attempts start at once and then after a backoff of 0.5 s doubling to
 * 5 s, each +-30 % of jitter; going back `online` cuts the wait short. Attempts stop when the
 * server answers `resume_failed` (grace period over) or after RESUME_TIMEOUT_MS in all.
 */

const LOG = '[sfu-client]'; // part of the client's log: one prefix to filter by

/** A `disconnected` peer connection gets this long to recover by itself (ICE consent comes back). */
export const DISCONNECTED_RESUME_MS = 2500;
/** One attempt: the socket opens within this, and `joined` arrives within this after; else the
 * socket is dropped and the next attempt opens another (a SYN lost just as the link came back
 * would otherwise wait for its retransmission). */
export const ATTEMPT_TIMEOUT_MS = 2000;
export const BACKOFF_FIRST_MS = 500;
export const BACKOFF_MAX_MS = 5000;
/** Each wait is the backoff times a random factor in [1 - JITTER, 1 + JITTER]. */
export const BACKOFF_JITTER = 0.3;
/** Give up after this long without a resume: the server's grace period (15 s by default) plus the
 * time it may take to notice the cut (its heartbeat, about 10 s), plus a margin. */
export const RESUME_TIMEOUT_MS = 30000;

/**
 * Closes by the server that end the session for good (docs/protocol.md, Transport): 1000 after
 * `leave`, 1001 shutdown after a drain, 1008 rate limit, 4001 removed by an operator, 4002 room
 * closed, 4003 resumed on another connection. Any other close (1006 when the network went, 1011,
 * 1013) is worth a resume: the server answers `resume_failed` if it does not hold us.
 */
export const FINAL_CLOSE_CODES = new Set([1000, 1001, 1008, 4001, 4002, 4003]);

/** The wait before attempt `attempt + 1` (attempt counts from 1), with jitter. */
export function backoffDelayMs(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (1 - BACKOFF_JITTER + 2 * BACKOFF_JITTER * random()));
}

/**
 * Makes attempts to resume, paced as above, until one gets through or there is no point.
 * `attempt(timeoutMs)` resolves once resumed and rejects otherwise (with `code` 'resume_failed'
 * when the server no longer holds us); `dropAttempt()` clears what a failed one left;
 * `giveUp(reason)` ends the session. The loop stops as soon as `active()` turns false.
 * @param {{progress: {lostAt: number, attempts: number}, timeoutMs: number, watch: LossWatch,
 *          active: () => boolean, attempt: (timeoutMs: number) => Promise<any>,
 *          dropAttempt: () => void, giveUp: (reason: string) => void}} resume
 *   `progress` the client's record of this resume (`attempts` is counted here), `timeoutMs` from
 *   `progress.lostAt` on.
 */
export async function resumeWithBackoff({ progress, timeoutMs, watch, active, attempt, dropAttempt, giveUp }) {
  const deadline = progress.lostAt + timeoutMs;
  while (active()) {
    if (Date.now() >= deadline) {
      giveUp(`could not resume within ${Math.round(timeoutMs / 1000)} s`);
      return;
    }
    if (watch.online) { // offline, an attempt would fail at once: wait for `online`
      progress.attempts += 1;
      try {
        await attempt(Math.min(ATTEMPT_TIMEOUT_MS, deadline - Date.now()));
        return; // resumed: the client took over
      } catch (err) {
        if (!active()) return;
        if (err.code === 'resume_failed') {
          giveUp(`resume_failed: ${err.message}`);
          return;
        }
        console.info(LOG, `resume attempt ${progress.attempts} failed: ${err.message}`);
        dropAttempt(); // the socket, and whatever a half-done resume set up
      }
    }
    const waitMs = backoffDelayMs(Math.max(1, progress.attempts));
    await watch.waitBeforeRetry(Math.min(waitMs, Math.max(0, deadline - Date.now())));
  }
}

/**
 * Watches the browser's network and the current peer connection, and calls `onLost(reason)` (at
 * most once per peer connection) when the connection is gone. `waitBeforeRetry(ms)` sleeps, but
 * wakes up early when the browser comes back online.
 */
export class LossWatch {
  /** @param {(reason: string) => void} onLost */
  constructor(onLost) {
    this.onLost = onLost;
    this._pc = null;
    this._pcConnected = false;
    this._disconnectedTimer = null;
    this._wake = null;
    this._onOffline = () => this._lost('the browser went offline');
    this._onOnline = () => {
      if (this._wake) this._wake();
    };
    this._started = false;
  }

  start() {
    if (this._started || typeof window === 'undefined') return;
    window.addEventListener('offline', this._onOffline);
    window.addEventListener('online', this._onOnline);
    this._started = true;
  }

  stop() {
    this.watch(null);
    if (this._wake) this._wake();
    if (!this._started) return;
    window.removeEventListener('offline', this._onOffline);
    window.removeEventListener('online', this._onOnline);
    this._started = false;
  }

  /** Follow this peer connection's state from now on (null: none). */
  watch(pc) {
    clearTimeout(this._disconnectedTimer);
    this._disconnectedTimer = null;
    if (this._pc) this._pc.removeEventListener('connectionstatechange', this._onPcState);
    this._pc = pc;
    this._pcConnected = false;
    if (!pc) return;
    this._onPcState = () => this._pcStateChanged(pc);
    pc.addEventListener('connectionstatechange', this._onPcState);
  }

  _pcStateChanged(pc) {
    if (pc !== this._pc) return;
    const state = pc.connectionState;
    if (state !== 'disconnected') {
      clearTimeout(this._disconnectedTimer);
      this._disconnectedTimer = null;
    }
    if (state === 'connected') {
      this._pcConnected = true;
    } else if (!this._pcConnected) {
      // never connected: not a cut (ICE simply does not get through), the app sees the state
    } else if (state === 'failed') {
      this._lost('the peer connection failed');
    } else if (state === 'disconnected' && this._disconnectedTimer === null) {
      this._disconnectedTimer = setTimeout(() => {
        this._disconnectedTimer = null;
        if (pc === this._pc && pc.connectionState === 'disconnected') {
          this._lost(`the peer connection stayed disconnected for ${DISCONNECTED_RESUME_MS / 1000} s`);
        }
      }, DISCONNECTED_RESUME_MS);
    }
  }

  _lost(reason) {
    this.watch(null); // one report per connection: the client replaces it
    this.onLost(reason);
  }

  /** True unless the browser says it has no network (then attempts would fail at once). */
  get online() {
    return typeof navigator === 'undefined' || navigator.onLine !== false;
  }

  /** Resolves after `ms`, or earlier when the browser comes back online (or on stop()). */
  waitBeforeRetry(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self._wake === done) self._wake = null;
        resolve();
      }
      this._wake = done;
    });
  }
}
