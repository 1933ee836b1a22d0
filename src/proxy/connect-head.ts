// The CONNECT fast path's parser. Nearly every tunnel starts with one small, well-formed
// `CONNECT host:port HTTP/1.1` head in the first packet; reading that directly skips Node's
// HTTP server (parser, IncomingMessage, connection bookkeeping), which was a tenth of the
// CPU a tunnel costs. Anything it does not vouch for (other methods, a head split across
// packets, unusual framing or bytes) returns null and goes to Node's parser, which gives
// the precise error, so the fast path never widens what is accepted.

export interface ConnectHead {
  /** The request target as sent (`host:port` or `[v6]:port`). */
  readonly target: string;
  readonly proxyAuthorization: string | undefined;
  /** Bytes of the head including the blank line; anything after is tunnel payload. */
  readonly length: number;
}

const CONNECT_PREFIX = Buffer.from('CONNECT ', 'latin1');
const REQUEST_LINE = /^CONNECT ([!-~]+) HTTP\/1\.[01]$/;
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/;
// Controls other than tab make Node's parser reject a header value; send those its way.
const BAD_VALUE = /[\u0000-\u0008\u000a-\u001f\u007f]/;

export function startsWithConnect(buf: Buffer): boolean {
  return buf.length >= CONNECT_PREFIX.length && buf.compare(CONNECT_PREFIX, 0, CONNECT_PREFIX.length, 0, CONNECT_PREFIX.length) === 0;
}

export function parseConnectHead(buf: Buffer, maxHeadBytes: number): ConnectHead | null {
  if (!startsWithConnect(buf)) return null;
  const end = buf.indexOf('\r\n\r\n', 0, 'latin1');
  if (end < 0 || end + 4 > maxHeadBytes) return null;
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const request = REQUEST_LINE.exec(lines[0]!);
  if (!request) return null;
  let proxyAuthorization: string | undefined;
  for (let i = 1; i < lines.length; i++) {
    const header = HEADER_LINE.exec(lines[i]!);
    if (!header) return null; // obs-fold, bare CR/LF, a missing colon...
    const value = header[2]!;
    if (BAD_VALUE.test(value)) return null;
    const name = header[1]!.toLowerCase();
    if (name === 'proxy-authorization') {
      if (proxyAuthorization !== undefined) return null;
      proxyAuthorization = value;
    } else if (name === 'content-length' || name === 'transfer-encoding') {
      return null; // a CONNECT with a body: leave the framing questions to the full parser
    }
  }
  return { target: request[1]!, proxyAuthorization, length: end + 4 };
}
