// The origin's response, relayed to the client. http-proxy forwards the request and hands
// over the response (selfHandleResponse); writing it here, in one writeHead and a plain
// data/end relay, replaces its per-header setHeader calls and a pipe() set up and torn down
// for every response, which together were a visible share of a forwarded request's CPU.
import type http from 'node:http';
import { endToEndRawHeaders } from './forward-headers.js';

/**
 * Relays `proxyRes` (the origin's answer to `req`) into `res`:
 * - the origin's fields go out in its order and spelling, repeats included, except the
 *   hop-by-hop ones (and those its Connection names), which describe the upstream hop only
 *   (RFC 9110 7.6.1); the client hop gets its own Connection field;
 * - the body is relayed with backpressure (a slow client pauses the origin);
 * - an origin that closes or resets half-way through cuts the client connection, which is
 *   how a truncated response must be passed on (RFC 9112 9.6), instead of leaving it waiting;
 * - a client that leaves half-way through drops the upstream connection (its unread rest
 *   would make it useless to the pool): http-handler aborts the upstream request then.
 */
export function relayResponse(proxyRes: http.IncomingMessage, req: http.IncomingMessage, res: http.ServerResponse): void {
  if (res.headersSent || res.destroyed) {
    proxyRes.destroy();
    return;
  }
  // Node re-frames the body for the client: an HTTP/1.0 client cannot take chunked.
  const http10 = req.httpVersion === '1.0';
  const headers = endToEndRawHeaders(proxyRes.rawHeaders, http10);
  // As http-proxy set it: an HTTP/1.0 client's connection ends with the response; otherwise
  // it stays open unless the client asked to close it (Node already worked that out).
  headers.push('Connection', http10 || !(res as { shouldKeepAlive?: boolean }).shouldKeepAlive ? 'close' : 'keep-alive');
  try {
    if (proxyRes.statusMessage) res.writeHead(proxyRes.statusCode ?? 502, proxyRes.statusMessage, headers);
    else res.writeHead(proxyRes.statusCode ?? 502, headers);
  } catch {
    // A field Node will not write (http-proxy's setHeader would have thrown too).
    proxyRes.destroy();
    res.destroy();
    return;
  }
  const resume = (): void => void proxyRes.resume();
  proxyRes.on('data', (chunk: Buffer) => {
    if (!res.write(chunk)) {
      proxyRes.pause();
      res.once('drain', resume);
    }
  });
  proxyRes.on('end', () => res.end());
  proxyRes.on('close', () => {
    if (!proxyRes.complete) res.destroy();
  });
}
