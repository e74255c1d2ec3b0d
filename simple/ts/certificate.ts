/**
 * One DTLS certificate for all of a service's connections, so that a new
 * RTCPeerConnection does not generate a key of its own (tens of ms each on
 * a busy page).
 */

/** The certificates' key: what Chromium generates for each connection by default. */
const CERTIFICATE_KEY: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };

/**
 * A fresh certificate; undefined where there is no WebRTC or generation
 * fails: each connection then makes its own.
 */
export async function generateCertificate(): Promise<RTCCertificate | undefined> {
  if (typeof RTCPeerConnection === 'undefined' || typeof RTCPeerConnection.generateCertificate !== 'function') {
    return undefined;
  }
  try {
    return await RTCPeerConnection.generateCertificate(CERTIFICATE_KEY);
  } catch {
    return undefined;
  }
}

/**
 * `rtcConfig` with the shared certificate added: the caller's own
 * certificates, if any, win; an expired shared one is dropped (each
 * connection then generates its own).
 */
export function withCertificate(rtcConfig: RTCConfiguration, certificate: RTCCertificate | undefined): RTCConfiguration {
  if (rtcConfig.certificates !== undefined || certificate === undefined || certificate.expires <= Date.now()) {
    return rtcConfig;
  }
  return { ...rtcConfig, certificates: [certificate] };
}
