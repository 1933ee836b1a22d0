// The package entry point: the launcher kit (`import { SluiceClient } from 'sluice'`).
// It loads no proxy code and no native modules; run the proxy with `sluice serve`.
export { SluiceClient, DEFAULT_API_URL, type SluiceClientOptions, type HttpMethod } from './client/sluice-client.js';
export {
  ManagedSession,
  type ManagedSessionOptions,
  type ManagedSessionEvents,
  type RecreatedInfo,
  type RecreateReason,
} from './client/managed-session.js';
export { SluiceApiError, SluiceResponseError, SluiceUnreachableError, isTransient } from './client/errors.js';
export { proxyEnv } from './client/proxy-env.js';
export type * from './client/types.js';
