// CONNECT: identify, decide, dial, answer 200 and relay. Reached from the listener's fast
// path (hand-parsed head) and from Node's HTTP server (every other CONNECT).
import type net from 'node:net';
import { HostError, parseAuthority } from '../policy/host.js';
import { parseBasicAuth } from '../identity/identify.js';
import type { Failure } from './outcomes.js';
import { rawRefusal } from './raw-response.js';
import { openTunnel, type TunnelDeps } from './tunnel.js';
import { clientAddress } from './client-address.js';

export interface ConnectOptions extends TunnelDeps {
  readonly handshakeTimeoutMs: number;
}

const ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n', 'latin1');

export type ConnectHandler = (socket: net.Socket, target: string, proxyAuthorization: string | undefined, pipelined: Buffer) => void;

export function createConnectHandler(opts: ConnectOptions): ConnectHandler {
  const { gate } = opts;
  return (socket, target, proxyAuthorization, pipelined) => {
    // Paused until the tunnel is up: later bytes wait in the kernel, not in our memory.
    socket.pause();
    const refuse = (f: Failure): void => rawRefusal(socket, f, opts.handshakeTimeoutMs);
    // Runs synchronously up to the first await; anything unexpected only costs this socket.
    void (async () => {
      let parsed;
      try {
        parsed = parseAuthority(target);
      } catch (err) {
        if (!(err instanceof HostError)) throw err;
        return refuse({ kind: 'bad_request', detail: `CONNECT target must be host:port or [ipv6]:port (${err.message})` });
      }
      const from = clientAddress(socket);
      const identity = gate.identify(parseBasicAuth(proxyAuthorization), from);
      if (!identity.ok) return refuse(gate.refuseIdentity(identity, 'connect', from, parsed.destination, parsed.port));
      const result = await gate.admit(identity.container, 'connect', from, parsed.destination, parsed.port);
      if (!result.ok) return refuse(result.failure);
      await openTunnel(opts, socket, 'connect', result.admission, pipelined, {
        established: () => void socket.write(ESTABLISHED),
        refuse,
      });
    })().catch(() => socket.destroy());
  };
}
