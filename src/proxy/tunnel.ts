// The end of every tunnel protocol (CONNECT, SOCKS5, SOCKS4): dial what the gate admitted,
// answer the client in its protocol, and relay.
import type net from 'node:net';
import { CLIENT_WENT_AWAY, dial } from './dial.js';
import type { Admission, Gate, Protocol } from './gate.js';
import type { Failure } from './outcomes.js';
import type { Connections } from './connections.js';
import type { UpstreamProxy } from './upstream-proxy.js';

export interface TunnelDeps {
  readonly gate: Gate;
  readonly connections: Connections;
  readonly connectTimeoutMs: number;
  /** Upstream connect latency, for the metrics histogram. */
  readonly observeConnectSeconds?: ((seconds: number) => void) | undefined;
  /** A parent proxy (SOCKS or HTTP) every allowed connection is dialled through, or null. */
  readonly upstreamProxy?: UpstreamProxy | null | undefined;
}

export interface TunnelReplies {
  /** Writes the protocol's success reply (it may need the upstream's bound address). */
  readonly established: (upstream: net.Socket) => void;
  readonly refuse: (f: Failure) => void;
}

/**
 * `client` must be paused. Bytes the client sent after its request (`pipelined`, e.g. a TLS
 * hello) go upstream first, in order.
 */
export async function openTunnel(deps: TunnelDeps, client: net.Socket, protocol: Protocol, admission: Admission, pipelined: Buffer, replies: TunnelReplies): Promise<void> {
  // A client that left while its decision waited (for DNS, say) may already be closed.
  let gone = client.destroyed;
  const onGone = (): void => void (gone = true);
  client.once('close', onGone);
  const dialled = await dial(admission.addresses, admission.port, deps.connectTimeoutMs, () => gone, { observeSeconds: deps.observeConnectSeconds, tunnel: true, via: deps.upstreamProxy });
  client.off('close', onGone);
  const left = gone || client.destroyed;
  if (!dialled.ok || left) {
    if (dialled.ok) dialled.socket.destroy();
    // Recorded as the attempt's outcome, so the audit never shows an allow that went nowhere.
    const failure: Failure = dialled.ok ? CLIENT_WENT_AWAY : dialled.failure;
    deps.gate.upstreamFailed(admission, failure);
    replies.refuse(failure);
    return;
  }
  replies.established(dialled.socket);
  if (pipelined.length > 0) dialled.socket.write(pipelined);
  deps.connections.relay(client, dialled.socket, protocol, admission, dialled.address, dialled.downstream);
}
