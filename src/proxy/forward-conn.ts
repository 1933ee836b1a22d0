// What the forwarding path works out from a request that is a pure function of its input,
// remembered per client connection: the client's address (fixed for the socket), the
// parsed Proxy-Authorization header and the parsed destination host. A keep-alive client
// sends the same ones on every request, and parsing them again was a visible share of a
// forwarded request's CPU. Only the parsing is remembered: identity, limits and policy are
// still decided (and audited) for every request, from whatever that request carried.
import type net from 'node:net';
import { parseBasicAuth, type Credentials } from '../identity/identify.js';
import { HostError, parseHost, type Destination, type IpAddress } from '../policy/host.js';
import { clientAddress } from './client-address.js';
import type httpProxy from 'http-proxy';
import { poolHost, poolTarget } from './upstream-agent.js';

export class ForwardConn {
  /** The client's IP as identity and the audit see it. */
  readonly from: string;
  private authSeen = false;
  private authHeader: string | undefined;
  private authCreds: Credentials | null = null;
  private hostText: string | null = null;
  private hostParsed: Destination | string = '';
  private lastIp: IpAddress | null = null;
  private lastIpText = '';
  private target: httpProxy.ServerOptions | null = null;
  private targetHost = '';
  private targetPort = -1;

  constructor(socket: net.Socket) {
    this.from = clientAddress(socket);
  }

  /** parseBasicAuth(header), reusing the last result while the header is the same string. */
  credentials(header: string | undefined): Credentials | null {
    if (!this.authSeen || header !== this.authHeader) {
      this.authCreds = parseBasicAuth(header);
      this.authHeader = header;
      this.authSeen = true;
    }
    return this.authCreds;
  }

  /**
   * The request's host parsed (parseHost), or the raw text when it does not parse, so the
   * gate refuses it as a bad request exactly as it would the string.
   */
  destination(host: string): Destination | string {
    if (host !== this.hostText) {
      let parsed: Destination | string;
      try {
        parsed = parseHost(host);
      } catch (err) {
        if (!(err instanceof HostError)) throw err;
        parsed = host;
      }
      this.hostParsed = parsed;
      this.hostText = host;
    }
    return this.hostParsed;
  }

  /**
   * ip.toString(), remembered for the last address: an IP-literal destination (parsed once
   * above) reaches the gate as the same object on every request, and comes back as the
   * address to dial.
   */
  ipText(ip: IpAddress): string {
    if (ip !== this.lastIp) {
      this.lastIpText = ip.toString();
      this.lastIp = ip;
    }
    return this.lastIpText;
  }

  /** What the upstream pool is keyed by: the allowed addresses, comma-joined (see poolHost). */
  poolHost(addresses: readonly IpAddress[]): string {
    return addresses.length === 1 ? this.ipText(addresses[0]!) : poolHost(addresses);
  }

  /**
   * http-proxy's options for the pool target (see poolTarget, `exactPathLater`), the same
   * object while the pool key and port are: http-proxy only reads it, and a keep-alive
   * client usually sends every request to one destination.
   */
  poolTarget(addresses: readonly IpAddress[], port: number): httpProxy.ServerOptions {
    const host = this.poolHost(addresses);
    if (this.target === null || host !== this.targetHost || port !== this.targetPort) {
      this.target = poolTarget(host, port, true);
      this.targetHost = host;
      this.targetPort = port;
    }
    return this.target;
  }
}

const conns = new WeakMap<net.Socket, ForwardConn>();

export function forwardConn(socket: net.Socket): ForwardConn {
  let c = conns.get(socket);
  if (c === undefined) {
    c = new ForwardConn(socket);
    conns.set(socket, c);
  }
  return c;
}
