// Bodies as the API sends them, for stand-in servers (CLI and client tests). Typed by the
// API's response schemas, so a change there that these miss does not compile, and the
// client, which checks every answer, would refuse them at run time.
import type { CheckResult, ContainerInfo, Decision, RuleWithUsage, SessionCreated, SessionSummary } from '../../src/client/types.js';

export const T0 = '2030-01-01T00:00:00.000Z';

export const RULE: RuleWithUsage = {
  id: 12,
  layer: 'global',
  session_id: null,
  container_pattern: 'web-*',
  destination_pattern: 'api.example.com',
  port_pattern: '443',
  action: 'deny',
  expires_at: null,
  notes: null,
  created_at: T0,
  hit_count: 0,
  last_used_at: null,
};

export const SESSION_CREATED: SessionCreated = {
  session_id: 's1',
  container_name: 'web',
  created_at: T0,
  expires_at: T0,
  rules_created: 0,
  allow_all: false,
  proxy_token: 'pt',
  proxy: { http: 'http://web:pt@h:3128', socks5: 'socks5h://web:pt@h:1080' },
};

export function sessionSummary(over: Partial<SessionSummary> = {}): SessionSummary {
  return {
    session_id: 's1',
    container_name: 'web',
    created_at: T0,
    expires_at: T0,
    ttl_seconds: 900,
    allow_all: false,
    source_ips: [],
    metadata: null,
    limits: null,
    rule_count: 0,
    ...over,
  };
}

export const CONTAINER: ContainerInfo = {
  container_name: 'web',
  current_session: null,
  active_sessions: [],
  learning: { active: false, source: null, operator_switch: { enabled: false, expires_at: null } },
  rule_counts: { session: 0, global: 0 },
};

/** A check's answer: the default deny unless `over` says otherwise. */
export function checkResult(over: Partial<CheckResult> = {}): CheckResult {
  return {
    decision: 'deny',
    layer: null,
    rule: null,
    reason: 'default_deny',
    explanation: 'no rule matched (default deny)',
    destination: 'x.org',
    port: 1,
    session_id: null,
    learning: null,
    would_be: null,
    ...over,
  };
}

/** A default-deny decision row. */
export function decisionRow(id: number): Decision {
  return {
    id,
    time: T0,
    container: 'web',
    session_id: null,
    protocol: 'connect',
    client_address: '127.0.0.1',
    destination: 'example.com',
    port: 443,
    address: null,
    decision: 'deny',
    reason: 'default_deny',
    layer: null,
    rule_id: null,
    error: null,
    bytes_up: null,
    bytes_down: null,
    duration_ms: null,
    close_reason: null,
  };
}
