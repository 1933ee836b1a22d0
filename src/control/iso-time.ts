// Times as the API writes them: stored and kept as epoch milliseconds, answered as the
// ISO 8601 text the response schemas describe.
import type { ApiTime } from '../api/responses.js';

export function isoTime(ms: number): ApiTime;
export function isoTime(ms: number | null): ApiTime | null;
export function isoTime(ms: number | null): ApiTime | null {
  return ms === null ? null : new Date(ms).toISOString();
}
