// The CLI's API client is the package's SluiceClient (src/client/); these names are kept
// for code written against the earlier CLI-only client.
export {
  SluiceClient as ApiClient,
  type SluiceClientOptions as ApiClientOptions,
  type HttpMethod,
} from '../client/sluice-client.js';
export { SluiceApiError as ApiError, SluiceUnreachableError as ApiUnreachableError } from '../client/errors.js';
