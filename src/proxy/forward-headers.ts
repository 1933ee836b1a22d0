// Hop-by-hop header removal for forwarded requests and responses (RFC 9110 7.6.1).
import type http from 'node:http';

/**
 * Hop-by-hop headers plus the proxy's own credentials: none of them may cross the proxy.
 * Transfer-Encoding is left to Node, which re-frames the body itself.
 */
export function isHopByHop(name: string): boolean {
  switch (name) {
    case 'connection':
    case 'keep-alive':
    case 'proxy-authorization':
    case 'proxy-authenticate':
    case 'proxy-connection':
    case 'te':
    case 'trailer':
    case 'upgrade':
      return true;
    default:
      return false;
  }
}

/**
 * The end-to-end fields of `headers`: everything but the hop-by-hop ones and those the
 * Connection header names. With `keepUpgrade` (a WebSocket handshake) Connection and
 * Upgrade stay. A new object: deleting fields from Node's header object instead was a
 * visible cost per request (every delete, of a field present or not, is a slow generic
 * operation, and it leaves the object in dictionary mode for everything that reads it later).
 */
export function endToEndHeaders(headers: http.IncomingHttpHeaders, keepUpgrade: boolean): http.IncomingHttpHeaders {
  let named: Set<string> | null = null;
  const connection = headers.connection;
  if (typeof connection === 'string') {
    for (const h of connection.split(',')) {
      const name = h.trim().toLowerCase();
      if (!name || (keepUpgrade && name === 'upgrade')) continue;
      // `Connection: keep-alive` / `close`, the usual values, name fields that go anyway.
      if (isHopByHop(name) && !(keepUpgrade && name === 'connection')) continue;
      (named ??= new Set()).add(name);
    }
  }
  const out: http.IncomingHttpHeaders = {};
  for (const name in headers) {
    if (isHopByHop(name) && !(keepUpgrade && (name === 'upgrade' || name === 'connection'))) continue;
    if (named !== null && named.has(name)) continue;
    out[name] = headers[name];
  }
  return out;
}
