// Every way a proxied connection attempt can fail, and how each protocol reports it. One
// table, so HTTP and SOCKS clients always hear the same story for the same failure.
import type { Outcome } from '../policy/resolver.js';
import { formatHostPort } from '../policy/host.js';

export type FailureKind =
  | 'identity_required'
  | 'identity_invalid'
  | 'denied'
  | 'bad_request'
  | 'limited'
  | 'dns_error'
  | 'dns_timeout'
  | 'connection_refused'
  | 'connection_timeout'
  | 'unreachable'
  | 'connect_error';

export interface Failure {
  readonly kind: FailureKind;
  /** One line for logs and for the `details` of Proxy-Status. */
  readonly detail: string;
  /** Full explanation for the HTTP body (defaults to `detail`). */
  readonly body?: string;
  /** For `limited`: when the client may try again (HTTP Retry-After). */
  readonly retryAfterSeconds?: number;
}

interface Rendering {
  readonly status: number;
  readonly proxyStatus: string;
  readonly socks5: number;
  readonly socks4: number;
}

export const SOCKS5_NOT_ALLOWED = 0x02;
const SOCKS4_REJECTED = 0x5b;

const RENDER: Record<FailureKind, Rendering> = {
  identity_required: { status: 407, proxyStatus: 'http_request_denied', socks5: SOCKS5_NOT_ALLOWED, socks4: SOCKS4_REJECTED },
  identity_invalid: { status: 407, proxyStatus: 'http_request_denied', socks5: SOCKS5_NOT_ALLOWED, socks4: SOCKS4_REJECTED },
  denied: { status: 403, proxyStatus: 'http_request_denied', socks5: SOCKS5_NOT_ALLOWED, socks4: SOCKS4_REJECTED },
  limited: { status: 429, proxyStatus: 'http_request_denied', socks5: SOCKS5_NOT_ALLOWED, socks4: SOCKS4_REJECTED },
  bad_request: { status: 400, proxyStatus: 'http_request_error', socks5: 0x01, socks4: SOCKS4_REJECTED },
  dns_error: { status: 502, proxyStatus: 'dns_error', socks5: 0x04, socks4: SOCKS4_REJECTED },
  dns_timeout: { status: 504, proxyStatus: 'dns_timeout', socks5: 0x04, socks4: SOCKS4_REJECTED },
  connection_refused: { status: 502, proxyStatus: 'connection_refused', socks5: 0x05, socks4: SOCKS4_REJECTED },
  connection_timeout: { status: 504, proxyStatus: 'connection_timeout', socks5: 0x06, socks4: SOCKS4_REJECTED },
  unreachable: { status: 502, proxyStatus: 'destination_unavailable', socks5: 0x04, socks4: SOCKS4_REJECTED },
  connect_error: { status: 502, proxyStatus: 'destination_unavailable', socks5: 0x04, socks4: SOCKS4_REJECTED },
};

export function renderingOf(kind: FailureKind): Rendering {
  return RENDER[kind];
}

/** An RFC 9209 Proxy-Status header value; `details` is an sf-string (printable ASCII, escaped). */
export function proxyStatusHeader(kind: FailureKind, detail: string): string {
  const clean = detail.replace(/[^\x20-\x7e]/g, '?').replace(/[\\"]/g, (c) => `\\${c}`);
  return `sluice; error=${RENDER[kind].proxyStatus}; details="${clean}"`;
}

export function describeOutcome(o: Outcome): string {
  if (!o.rule) return 'no rule matched (default deny)';
  const r = o.rule;
  const who = r.layer === 'session' ? `session rule #${r.id}` : `${r.layer} rule #${r.id}`;
  const ports = r.portPattern === '*' ? 'any port' : `port ${r.portPattern}`;
  const container = r.containerPattern === '*' ? '' : ` for container ${r.containerPattern}`;
  return `${who} (${r.action} ${r.destinationPattern} ${ports}${container})`;
}

export interface DenialContext {
  readonly container: string;
  readonly host: string;
  readonly port: number;
}

/** The failure for a policy denial, worded so a person or an AI agent sees it is policy, not the network. */
export function denial(ctx: DenialContext, verdict: Outcome & { sessionId?: string | null }, why?: string): Failure {
  const target = formatHostPort(ctx.host, ctx.port);
  const decidedBy = why ?? describeOutcome(verdict);
  const session = verdict.sessionId ? ` (session ${verdict.sessionId})` : '';
  return {
    kind: 'denied',
    detail: `${target} denied for container ${ctx.container}: ${decidedBy}`,
    body: [
      `Blocked by sluice egress policy: ${target}`,
      `container: ${ctx.container}${session}`,
      `decided by: ${decidedBy}`,
      '',
      'This is a deliberate access-policy decision by the network egress proxy, not a network',
      'failure; retrying will not help. If this destination is needed, ask the operator to allow',
      'it (a session or global rule for this host and port).',
      '',
    ].join('\n'),
  };
}

export function identityFailure(kind: 'identity_required' | 'identity_invalid'): Failure {
  const detail =
    kind === 'identity_required'
      ? 'proxy credentials required (username = container name, password = session proxy_token)'
      : 'proxy credentials rejected: the password must be the proxy_token of an active session of that container';
  return {
    kind,
    detail,
    body: `sluice: ${detail}.\nThis proxy only serves sandboxes with an active session; ask the launcher for the proxy URL it was given.\n`,
  };
}
