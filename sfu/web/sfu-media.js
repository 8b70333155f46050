/**
 * sfu-media.js: publishing helpers used by sfu-client.js: track sources, simulcast encodings,
 * dynacast (turning encodings on and off) and screen capture.
 */

/** The three layers of a simulcast camera, low to high (the rids the server expects). */
export const SIMULCAST_ENCODINGS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 }),
  Object.freeze({ rid: 'f', maxBitrate: 1500000 }),
]);

/** The protocol's source of a track of `kind` published with the `source` option `option`. */
export function sourceOf(kind, option) {
  const screen = String(option).startsWith('screen');
  if (kind === 'video') return screen ? 'screen' : 'camera';
  return screen ? 'screen_audio' : 'microphone';
}

/** Below this capture size (the shorter side, px) video goes as one layer: its quarter-size
 * layer would be smaller than a thumbnail. */
export const MIN_SIMULCAST_SIDE = 360;

/**
 * The `sendEncodings` of a new transceiver: three simulcast layers for video when `simulcast` and
 * the capture is at least 640x360 (fresh copies: the browser keeps what it is given), else none
 * (one encoding).
 * @param {MediaStreamTrack} track
 * @param {boolean} simulcast
 */
export function sendEncodingsFor(track, simulcast) {
  if (track.kind !== 'video' || !simulcast) return undefined;
  const { width, height } = track.getSettings ? track.getSettings() : {};
  if (width && height && Math.min(width, height) < MIN_SIMULCAST_SIDE) return undefined;
  return SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
}

/** Header extensions the server relies on in what we send (docs/protocol.md, simulcast;
 * active speaker from the audio level). */
const NEEDED_EXTENSIONS = {
  audio: ['urn:ietf:params:rtp-hdrext:sdes:mid', 'urn:ietf:params:rtp-hdrext:ssrc-audio-level',
    'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time'],
  video: ['urn:ietf:params:rtp-hdrext:sdes:mid', 'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time'],
  simulcast: ['urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id',
    'urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id'],
};

/**
 * Chromium remembers which header extensions the remote side offered: a transceiver added after
 * a server offer without, say, the rid extension gets it `stopped`, and then its simulcast offer
 * fails ("negotiates simulcast but does not negotiate the RID RTP header extension"). So turn the
 * extensions we need back on for a new sending transceiver (where the browser has this API).
 * @param {RTCRtpTransceiver} transceiver
 * @param {string} kind
 * @param {boolean} simulcast
 */
export function negotiateNeededExtensions(transceiver, kind, simulcast) {
  if (typeof transceiver.setHeaderExtensionsToNegotiate !== 'function') return;
  const needed = [...NEEDED_EXTENSIONS[kind] || [], ...(simulcast ? NEEDED_EXTENSIONS.simulcast : [])];
  const extensions = transceiver.getHeaderExtensionsToNegotiate();
  if (!extensions.some((e) => needed.includes(e.uri) && e.direction === 'stopped')) return;
  try {
    transceiver.setHeaderExtensionsToNegotiate(extensions.map((e) => (
      needed.includes(e.uri) && e.direction === 'stopped' ? { ...e, direction: 'sendrecv' } : e)));
  } catch (err) {
    console.warn('[sfu-media] cannot turn header extensions on:', err);
  }
}

/**
 * Dynacast: sends only the encodings whose rid is in `rids` (`layers_needed`), turns the others
 * off. Returns whether anything changed. A sender without simulcast is left alone.
 * @param {RTCRtpSender} sender
 * @param {string[]} rids
 */
export async function setActiveLayers(sender, rids) {
  const params = sender.getParameters();
  if (!params.encodings || params.encodings.length < 2) return false;
  let changed = false;
  for (const enc of params.encodings) {
    const active = !enc.rid || rids.includes(enc.rid);
    if (enc.active !== active) {
      enc.active = active;
      changed = true;
    }
  }
  if (changed) await sender.setParameters(params);
  return changed;
}

/**
 * Asks the user for a screen (or window, or tab) to share, with its audio when `audio` and the
 * browser offers it. Rejects when the user cancels or the browser has no screen capture.
 * @param {{audio?: boolean, video?: MediaTrackConstraints|boolean}} [options]
 */
export async function captureScreen({ audio = true, video = true } = {}) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
    throw new Error('this browser cannot share its screen (no getDisplayMedia)');
  }
  return navigator.mediaDevices.getDisplayMedia({ video, audio });
}
