// What SluiceClient throws: the server said no (SluiceApiError), or nobody answered
// (SluiceUnreachableError). Anything else is a bug or a non-JSON answer (plain Error).

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

/** True for failures worth retrying later: no answer, or the server (or a proxy in front) failing. */
export function isTransient(err: unknown): boolean {
  return err instanceof SluiceUnreachableError || (err instanceof SluiceApiError && (err.status >= 500 || err.status === 429));
}
