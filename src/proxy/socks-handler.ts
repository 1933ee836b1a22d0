// SOCKS5 (RFC 1928/1929) and SOCKS4/4a connection handling on top of the pure codec.
import type net from 'node:net';
import type { Credentials, Identity } from '../identity/identify.js';
import { clientAddress } from './client-address.js';
import type { Protocol } from './gate.js';
import { openTunnel, type TunnelDeps } from './tunnel.js';
import { renderingOf, type Failure } from './outcomes.js';
import {
  SOCKS4_REPLY,
  SOCKS5_METHOD,
  SOCKS5_REPLY,
  parseSocks4Request,
  parseSocks5Auth,
  parseSocks5Greeting,
  parseSocks5Request,
  socks4Reply,
  socks5AuthReply,
  socks5MethodReply,
  socks5Reply,
} from './socks-codec.js';

export interface SocksHandlerOptions extends TunnelDeps {
  readonly handshakeTimeoutMs: number;
}

/** Every handshake message is far smaller; more than this unparsed means a hostile client. */
const MAX_HANDSHAKE_BUFFER = 4096;

type Phase = 'greeting' | 'auth' | 'request' | 'socks4' | 'connecting';

/** SOCKS4 carries identity in the userid as `container:token`; a bare name is a username alone. */
function socks4Credentials(userId: string): Credentials | null {
  if (userId === '') return null;
  const colon = userId.indexOf(':');
  return colon < 0 ? { username: userId, password: '' } : { username: userId.slice(0, colon), password: userId.slice(colon + 1) };
}

function boundOf(upstream: net.Socket): { host: string; port: number } | undefined {
  const host = upstream.localAddress;
  const port = upstream.localPort;
  return host && port ? { host, port } : undefined;
}

export function handleSocks(socket: net.Socket, first: Buffer, opts: SocksHandlerOptions): void {
  const { gate } = opts;
  const from = clientAddress(socket);
  let phase: Phase = first[0] === 5 ? 'greeting' : 'socks4';
  let buf = first;
  let identity: Identity | null = null;

  const timer = setTimeout(() => socket.destroy(), opts.handshakeTimeoutMs);
  const finish = (reply?: Buffer): void => {
    clearTimeout(timer);
    socket.off('data', onData);
    if (reply && socket.writable) {
      socket.end(reply);
      // The socket may be paused (a refused CONNECT) with bytes the client pipelined still
      // unread, and then the client's FIN would never be seen: read on, and cut a client
      // that does not close.
      socket.resume();
      socket.setTimeout(opts.handshakeTimeoutMs > 0 ? opts.handshakeTimeoutMs : 10_000, () => socket.destroy());
    } else socket.destroy();
  };
  socket.on('error', () => finish());
  socket.on('close', () => clearTimeout(timer));
  // A client that half-closes before its request is complete can never finish the
  // handshake; without this the socket would wait out handshake_ms (allowHalfOpen).
  socket.once('end', () => {
    // (Not after finish() already ended it with a reply still on its way out.)
    if (phase !== 'connecting' && socket.writable) finish();
  });
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    step();
  };
  socket.on('data', onData);
  step();

  function step(): void {
    for (;;) {
      if (buf.length > MAX_HANDSHAKE_BUFFER) return finish();
      switch (phase) {
        case 'greeting': {
          const r = parseSocks5Greeting(buf);
          if (r.status === 'incomplete') return;
          if (r.status === 'error') return finish(r.reply);
          buf = buf.subarray(r.consumed);
          if (r.value.methods.includes(SOCKS5_METHOD.USER_PASS)) {
            socket.write(socks5MethodReply(SOCKS5_METHOD.USER_PASS));
            phase = 'auth';
            break;
          }
          // No credentials offered: only a session's declared source address can identify it.
          identity = gate.identify(null, from);
          if (!identity.ok || !r.value.methods.includes(SOCKS5_METHOD.NO_AUTH)) {
            if (!identity.ok) gate.refuseIdentity(identity, 'socks5', from, '', 0);
            return finish(socks5MethodReply(SOCKS5_METHOD.NONE_ACCEPTABLE));
          }
          socket.write(socks5MethodReply(SOCKS5_METHOD.NO_AUTH));
          phase = 'request';
          break;
        }
        case 'auth': {
          const r = parseSocks5Auth(buf);
          if (r.status === 'incomplete') return;
          if (r.status === 'error') return finish(r.reply);
          buf = buf.subarray(r.consumed);
          identity = gate.identify(r.value, from);
          if (!identity.ok) {
            gate.refuseIdentity(identity, 'socks5', from, '', 0);
            return finish(socks5AuthReply(false));
          }
          socket.write(socks5AuthReply(true));
          phase = 'request';
          break;
        }
        case 'request': {
          const r = parseSocks5Request(buf);
          if (r.status === 'incomplete') return;
          if (r.status === 'error') return finish(r.reply);
          buf = buf.subarray(r.consumed);
          if (r.value.command !== 1) return finish(socks5Reply(SOCKS5_REPLY.COMMAND_NOT_SUPPORTED));
          return connect('socks5', r.value.host, r.value.port);
        }
        case 'socks4': {
          const r = parseSocks4Request(buf);
          if (r.status === 'incomplete') return;
          if (r.status === 'error') return finish(r.reply);
          buf = buf.subarray(r.consumed);
          if (r.value.command !== 1) return finish(socks4Reply(SOCKS4_REPLY.REJECTED));
          identity = gate.identify(socks4Credentials(r.value.userId), from);
          if (!identity.ok) {
            gate.refuseIdentity(identity, 'socks4', from, r.value.host, r.value.port);
            return finish(socks4Reply(SOCKS4_REPLY.REJECTED));
          }
          return connect('socks4', r.value.host, r.value.port);
        }
        case 'connecting':
          return;
      }
    }
  }

  function connect(protocol: Protocol, host: string, port: number): void {
    phase = 'connecting';
    // The client's part of the handshake is done; DNS and dialling have their own deadlines,
    // and a slow destination must be answered with a reply code, not a silent close.
    clearTimeout(timer);
    socket.off('data', onData);
    socket.pause();
    const reject = (f: Failure): void =>
      finish(protocol === 'socks5' ? socks5Reply(renderingOf(f.kind).socks5) : socks4Reply(renderingOf(f.kind).socks4));
    void (async () => {
      const container = identity?.ok ? identity.container : '';
      const result = await gate.admit(container, protocol, from, host, port);
      if (!result.ok) return reject(result.failure);
      await openTunnel(opts, socket, protocol, result.admission, buf, {
        established: (upstream) => {
          const bound = boundOf(upstream);
          socket.write(protocol === 'socks5' ? socks5Reply(SOCKS5_REPLY.SUCCEEDED, bound) : socks4Reply(SOCKS4_REPLY.GRANTED, bound?.host.includes(':') ? undefined : bound));
        },
        refuse: reject,
      });
    })().catch(() => finish());
  }
}
