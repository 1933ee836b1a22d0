// What SluiceClient throws: the server said no (SluiceApiError), nobody answered
// (SluiceUnreachableError), or the answer is not what sluice sends (SluiceResponseError).
// Anything else is a bug or a non-JSON answer (plain Error).
import type { z } from 'zod';

/** The API answered with a non-2xx status. `error` and `details` are the server's `{error, details}`. */
export class SluiceApiError extends Error {
  constructor(
    readonly status: number,
    /** The server's `error` text (or the HTTP status text when the body was not sluice's JSON). */
    readonly error: string,
    readonly details?: unknown,
  ) {
    super(`${status} ${error}`);
    this.name = 'SluiceApiError';
  }
}

/** No HTTP answer at all: refused, DNS failure, reset, timeout. */
export class SluiceUnreachableError extends Error {
  constructor(
    readonly baseUrl: string,
    /** Node's error code (ECONNREFUSED, ENOTFOUND, ...) or "timeout" when known. */
    readonly code: string | undefined,
  ) {
    super(`sluice API is not reachable at ${baseUrl}${code ? ` (${code})` : ''}`);
    this.name = 'SluiceUnreachableError';
  }
}

/**
 * A 2xx answer that is not the body sluice sends for that route: fields missing or of the
 * wrong type (an older or different server, or a proxy in between answering for it).
 * Fields the client does not know are not an error: a newer server may add some.
 */
export class SluiceResponseError extends Error {
  constructor(
    /** `METHOD /path` of the request. */
    readonly request: string,
    /** One line per problem: `path.to.field: what is wrong`. */
    readonly problems: string[],
  ) {
    const shown = problems.slice(0, 3).join('; ') + (problems.length > 3 ? `; and ${problems.length - 3} more` : '');
    super(`unexpected response from the API to ${request} (is it sluice, and a version this client knows?): ${shown}`);
    this.name = 'SluiceResponseError';
  }
}

/**
 * `value` as `schema` describes it, or a SluiceResponseError naming what does not fit.
 * Unknown fields are let through (the schemas are strict for the server's own tests).
 * Response schemas transform nothing, so what passes is returned as it was sent.
 */
export function checkResponse<S extends z.ZodType>(schema: S, value: unknown, request: string): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) {
    const problems = result.error.issues
      .filter((issue) => issue.code !== 'unrecognized_keys')
      .map((issue) => `${issue.path.length > 0 ? issue.path.map(String).join('.') : '(body)'}: ${issue.message}`);
    if (problems.length > 0) throw new SluiceResponseError(request, problems);
  }
  return value as z.output<S>;
}

/** True for failures worth retrying later: no answer, or the server (or a proxy in front) failing. */
export function isTransient(err: unknown): boolean {
  return err instanceof SluiceUnreachableError || (err instanceof SluiceApiError && (err.status >= 500 || err.status === 429));
}
