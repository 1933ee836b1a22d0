// The environment a sandboxed process needs to send its traffic through sluice.
import type { ProxyUrls } from './types.js';

/**
 * HTTP_PROXY/HTTPS_PROXY = the session's HTTP proxy URL, ALL_PROXY = its SOCKS5 URL
 * (`socks5h://`: the proxy resolves names), each with its lower-case twin (curl, wget and
 * many libraries read only one spelling), and NO_PROXY empty so nothing bypasses the proxy.
 */
export function proxyEnv(proxy: ProxyUrls): Record<string, string> {
  return {
    HTTP_PROXY: proxy.http,
    HTTPS_PROXY: proxy.http,
    ALL_PROXY: proxy.socks5,
    NO_PROXY: '',
    http_proxy: proxy.http,
    https_proxy: proxy.http,
    all_proxy: proxy.socks5,
    no_proxy: '',
  };
}
