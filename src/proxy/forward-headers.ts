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

/** The field names a Connection header value lists (lower case), less those that go anyway. */
function connectionNamed(value: string, keepUpgrade: boolean, into: Set<string> | null): Set<string> | null {
  // The usual values, as usually spelled, name nothing beyond the fields that go anyway.
  if (value === 'keep-alive' || value === 'close' || value === 'Keep-Alive' || value === 'Close') return into;
  for (const h of value.split(',')) {
    const name = h.trim().toLowerCase();
    if (!name || (keepUpgrade && name === 'upgrade')) continue;
    // `Connection: keep-alive` / `close`, the usual values, name fields that go anyway.
    if (isHopByHop(name) && !(keepUpgrade && name === 'connection')) continue;
    (into ??= new Set()).add(name);
  }
  return into;
}

/**
 * The end-to-end fields of a request's `headers`, as http-proxy is to send them upstream:
 * everything but the hop-by-hop fields and those the Connection header names. With
 * `keepUpgrade` (a WebSocket handshake) Connection and Upgrade stay.
 *
 * The fields are in reverse order: http-proxy copies them (util._extend, which walks the
 * keys last to first) before Node's client writes them in the copy's order, so reversed
 * here, the origin receives them in the client's order (Host first, as sent).
 *
 * A new object: deleting fields from Node's header object instead was a visible cost per
 * request (every delete, of a field present or not, is a slow generic operation, and it
 * leaves the object in dictionary mode for everything that reads it later).
 */
export function upstreamRequestHeaders(headers: http.IncomingHttpHeaders, keepUpgrade: boolean): http.IncomingHttpHeaders {
  const connection = headers.connection;
  const named = typeof connection === 'string' ? connectionNamed(connection, keepUpgrade, null) : null;
  const out: http.IncomingHttpHeaders = {};
  const names = Object.keys(headers);
  for (let i = names.length - 1; i >= 0; i--) {
    const name = names[i]!;
    if (isHopByHop(name) && !(keepUpgrade && (name === 'upgrade' || name === 'connection'))) continue;
    if (named !== null && named.has(name)) continue;
    out[name] = headers[name];
  }
  return out;
}

/**
 * isHopByHop for a field name as the sender spelled it (raw headers keep the case). Only
 * names of a hop-by-hop field's length are lower-cased: most fields are decided by length.
 */
function hopByHopRaw(name: string): boolean {
  switch (name.length) {
    case 2: // te
    case 7: // trailer, upgrade
    case 10: // connection, keep-alive
    case 16: // proxy-connection
    case 18: // proxy-authenticate
    case 19: // proxy-authorization
      return isHopByHop(name.toLowerCase());
    default:
      return false;
  }
}

function isNamed(name: string, wanted: string): boolean {
  return name.length === wanted.length && name.toLowerCase() === wanted;
}

/**
 * The end-to-end fields of a response, from its raw headers (Node's flat
 * `[name, value, name, value, ...]`) into the same form, for writeHead: the origin's order,
 * spelling and repeated fields are kept; the hop-by-hop fields, those the Connection
 * field(s) name and, for a client that cannot take it (`dropTransferEncoding`, HTTP/1.0),
 * Transfer-Encoding are not. Working from the raw list spares building Node's header object
 * for the response (and copying it again), and relays the fields as the origin sent them.
 */
export function endToEndRawHeaders(raw: readonly string[], dropTransferEncoding: boolean): string[] {
  const out: string[] = [];
  let named: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (hopByHopRaw(name)) {
      if (isNamed(name, 'connection')) named = connectionNamed(raw[i + 1]!, false, named);
      continue;
    }
    if (dropTransferEncoding && isNamed(name, 'transfer-encoding')) continue;
    out.push(name, raw[i + 1]!);
  }
  if (named === null) return out;
  // Rare: a Connection field naming other fields (it may come after them), so a second pass.
  const kept: string[] = [];
  for (let i = 0; i < out.length; i += 2) if (!named.has(out[i]!.toLowerCase())) kept.push(out[i]!, out[i + 1]!);
  return kept;
}
