// Answers written straight to a raw socket, outside Node's HTTP server: CONNECT (both the
// fast path and the parser's), upgrades, and requests the parser rejected.
import type net from 'node:net';
import { proxyStatusHeader, renderingOf, type Failure } from './outcomes.js';

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 407: 'Proxy Authentication Required', 408: 'Request Timeout', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large', 502: 'Bad Gateway', 504: 'Gateway Timeout' };

/** A complete response, then the socket is ended (and read until the client closes). */
export function rawResponse(socket: net.Socket, status: number, body: string, headers: Record<string, string> = {}, lingerMs = 10_000): void {
  if (socket.destroyed || !socket.writable) return;
  const payload = Buffer.from(body, 'utf8');
  let head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${payload.length}\r\nConnection: close\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  socket.end(Buffer.concat([Buffer.from(head + '\r\n', 'latin1'), payload]));
  drainUntilClosed(socket, lingerMs);
}

/** The refusal for `f` on a raw socket, with its status, Proxy-Status and body. */
export function rawRefusal(socket: net.Socket, f: Failure, lingerMs: number): void {
  rawResponse(socket, renderingOf(f.kind).status, failureBody(f), failureHeaders(f), lingerMs);
}

/**
 * After the last response on a raw (CONNECT or upgrade) socket: read and discard whatever
 * the client still sends. Such a socket is paused, and bytes it holds unread (a TLS hello
 * pipelined after a refused CONNECT, say) would keep the client's FIN from ever being seen:
 * the socket would stay open forever and hold up shutdown. A client that does not close
 * within `lingerMs` is cut.
 */
export function drainUntilClosed(socket: net.Socket, lingerMs: number): void {
  socket.resume();
  socket.setTimeout(lingerMs > 0 ? lingerMs : 10_000, () => socket.destroy());
}

export function failureHeaders(f: Failure): Record<string, string> {
  const headers: Record<string, string> = { 'Proxy-Status': proxyStatusHeader(f.kind, f.detail) };
  if (f.kind === 'identity_required' || f.kind === 'identity_invalid') headers['Proxy-Authenticate'] = 'Basic realm="sluice"';
  if (f.retryAfterSeconds !== undefined) headers['Retry-After'] = String(f.retryAfterSeconds);
  return headers;
}

export function failureBody(f: Failure): string {
  return f.body ?? `sluice: ${f.detail}\n`;
}
