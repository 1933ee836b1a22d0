// Bodies and query strings the control API accepts. Unknown fields are rejected: a typo
// such as `netwrok_rules` must fail loudly, never silently drop a sandbox's rules.
import { z } from 'zod';
import { NAME_RE } from '../policy/patterns.js';

export const nameSchema = z
  .string()
  .regex(NAME_RE, 'must be 1 to 128 letters, digits, ".", "_" or "-"')
  // URL clients resolve "." and ".." as dot segments, so a session or container so named
  // could never be read, heartbeated or deleted through its /api/... path.
  .refine((name) => name !== '.' && name !== '..', 'must not be "." or ".."');
const ttlSeconds = z.number().int().min(1).max(86_400);

export const sessionLimitsSchema = z
  .object({
    /** Concurrent connections; 0 = unlimited. */
    max_connections: z.number().int().min(0).max(1_000_000).optional(),
    /** New connections per second; 0 = unlimited. */
    connections_per_second: z.number().min(0).max(1_000_000).optional(),
  })
  .strict();
export type SessionLimits = z.infer<typeof sessionLimitsSchema>;
const notes = z.string().max(1_000);

/** How deep session metadata may nest; deeper input is refused instead of recursing on it later. */
export const MAX_METADATA_DEPTH = 32;

/** Whether a parsed JSON value nests arrays/objects at most `limit` deep (checked without recursion). */
export function nestingWithin(value: unknown, limit: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth + 1 > limit) return false;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return true;
}

export const networkRuleSchema = z
  .object({
    destination_pattern: z.string().min(1).max(300),
    port_pattern: z.string().min(1).max(400).default('*'),
    action: z.enum(['allow', 'deny']).default('allow'),
    notes: notes.optional(),
  })
  .strict();

export const sessionCreateSchema = z
  .object({
    session_id: nameSchema.optional(),
    container_name: nameSchema,
    ttl_seconds: ttlSeconds.optional(),
    network_rules: z.array(networkRuleSchema).default([]),
    allow_all: z.boolean().default(false),
    source_ips: z.array(z.string().min(1).max(64)).max(64).default([]),
    metadata: z
      .record(z.string().max(128), z.unknown())
      .refine((m) => nestingWithin(m, MAX_METADATA_DEPTH), `must not nest arrays or objects deeper than ${MAX_METADATA_DEPTH} levels`)
      .optional(),
    /** Overrides the configured per-container connection limits while this session is current. */
    limits: sessionLimitsSchema.optional(),
  })
  .strict();
export type SessionCreate = z.infer<typeof sessionCreateSchema>;

export const ruleCreateSchema = z
  .object({
    container_pattern: z.string().min(1).max(128).default('*'),
    destination_pattern: z.string().min(1).max(300),
    port_pattern: z.string().min(1).max(400).default('*'),
    action: z.enum(['allow', 'deny']),
    notes: notes.optional(),
    expires_in_seconds: z.number().int().min(1).max(10 * 365 * 86_400).optional(),
  })
  .strict();
export type RuleCreate = z.infer<typeof ruleCreateSchema>;

export const rulePatchSchema = z
  .object({
    container_pattern: z.string().min(1).max(128).optional(),
    destination_pattern: z.string().min(1).max(300).optional(),
    port_pattern: z.string().min(1).max(400).optional(),
    action: z.enum(['allow', 'deny']).optional(),
    notes: notes.nullable().optional(),
    /** null clears the expiry. */
    expires_in_seconds: z.number().int().min(1).max(10 * 365 * 86_400).nullable().optional(),
  })
  .strict()
  .refine((p) => Object.keys(p).length > 0, 'patch must change at least one field');
export type RulePatch = z.infer<typeof rulePatchSchema>;

export const ruleListQuerySchema = z
  .object({
    container: nameSchema.optional(),
    layer: z.enum(['global', 'session', 'builtin']).optional(),
    session_id: nameSchema.optional(),
  })
  .strict();
export type RuleListQuery = z.infer<typeof ruleListQuerySchema>;

export const learningSchema = z
  .object({
    enabled: z.boolean(),
    ttl_seconds: z.number().int().min(1).max(30 * 86_400).optional(),
  })
  .strict();
export type LearningInput = z.infer<typeof learningSchema>;

export const checkSchema = z
  .object({
    container_name: nameSchema,
    destination: z.string().min(1).max(300),
    port: z.number().int().min(1).max(65_535),
    /** Also resolve a hostname and apply address rules, as the proxy does before dialling. */
    resolve: z.boolean().default(false),
  })
  .strict();
export type CheckInput = z.infer<typeof checkSchema>;

export const ruleIdSchema = z.coerce.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
