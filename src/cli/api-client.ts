// The small HTTP client the CLI's client subcommands use to talk to a running sluice API.

export interface ApiClientOptions {
  /** e.g. http://127.0.0.1:9080 (a path prefix is kept: http://host/sluice -> /sluice/api/...). */
  baseUrl: string;
  token?: string;
  /** Per request; a hung server should not hang a script forever. */
  timeoutMs?: number;
}

/** The server answered with a non-2xx status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    /** The server's `error` text (or the HTTP status text when the body was not our JSON). */
    readonly error: string,
    readonly details?: unknown,
  ) {
    super(`${status} ${error}`);
    this.name = 'ApiError';
  }
}

/** No HTTP answer at all: refused, DNS failure, reset, timeout. */
export class ApiUnreachableError extends Error {
  constructor(
    readonly baseUrl: string,
    /** Node's error code (ECONNREFUSED, ENOTFOUND, ...) or "timeout" when known. */
    readonly code: string | undefined,
  ) {
    super(`sluice API is not reachable at ${baseUrl}${code ? ` (${code})` : ''}; is \`sluice serve\` running, and are --api / SLUICE_API_URL right?`);
    this.name = 'ApiUnreachableError';
  }
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

const DEFAULT_TIMEOUT_MS = 30_000;

export class ApiClient {
  private readonly base: URL;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;

  constructor(options: ApiClientOptions) {
    // A trailing slash makes relative resolution append to a path prefix instead of replacing it.
    this.base = new URL(options.baseUrl.endsWith('/') ? options.baseUrl : `${options.baseUrl}/`);
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** `path` is relative to the base URL (leading "/" optional); callers encode path segments. */
  async request<T>(method: HttpMethod, path: string, body?: unknown): Promise<T> {
    const url = new URL(path.replace(/^\/+/, ''), this.base);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';

    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw new ApiUnreachableError(this.base.href.replace(/\/$/, ''), networkErrorCode(err));
    }
    const text = await res.text();
    if (!res.ok) throw toApiError(res, text);
    return (text === '' ? undefined : parseJson(text)) as T;
  }
}

function toApiError(res: Response, text: string): ApiError {
  const body = text === '' ? undefined : safeParseJson(text);
  if (typeof body === 'object' && body !== null && typeof (body as { error?: unknown }).error === 'string') {
    const { error, details } = body as { error: string; details?: unknown };
    return new ApiError(res.status, error, details);
  }
  // Not our JSON (a reverse proxy's HTML page, say): show the status and a bit of the text.
  const snippet = text.trim().slice(0, 200);
  return new ApiError(res.status, res.statusText || 'error', snippet === '' ? undefined : snippet);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`the API answered with something that is not JSON: ${text.slice(0, 200)}`);
  }
}

function safeParseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

// fetch wraps socket errors as TypeError('fetch failed', { cause }); the cause has the code.
function networkErrorCode(err: unknown): string | undefined {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'timeout';
  let cur: unknown = err;
  for (let depth = 0; depth < 4 && typeof cur === 'object' && cur !== null; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    // undici reports "connect ECONNREFUSED" from several attempts (IPv4 and IPv6) as an AggregateError.
    const inner = cur instanceof AggregateError ? cur.errors[0] : (cur as { cause?: unknown }).cause;
    cur = inner;
  }
  return undefined;
}
