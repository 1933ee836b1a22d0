// A proxy port. The first byte tells the protocol apart (0x04/0x05 = SOCKS, anything
// else = HTTP), so every port serves every protocol.
import net from 'node:net';
import type http from 'node:http';
import { handleSocks, type SocksHandlerOptions } from './socks-handler.js';
import type { ConnectHandler } from './connect-handler.js';
import { parseConnectHead } from './connect-head.js';

export interface ListenerOptions extends SocksHandlerOptions {
  readonly connect: ConnectHandler;
  readonly maxHeaderBytes: number;
}

export function createProxyListener(httpServer: http.Server, opts: ListenerOptions): net.Server {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    socket.on('error', () => socket.destroy());
    // A client that connects and says nothing must not hold the socket forever.
    socket.setTimeout(opts.handshakeTimeoutMs, () => socket.destroy());
    // Nor one that half-closes without a byte (the socket allows half-open for tunnels).
    const silentEnd = (): void => void socket.destroy();
    socket.once('end', silentEnd);
    socket.once('data', (first: Buffer) => {
      socket.setTimeout(0);
      socket.off('end', silentEnd);
      if (first[0] === 0x04 || first[0] === 0x05) {
        handleSocks(socket, first, opts);
        return;
      }
      const connect = parseConnectHead(first, opts.maxHeaderBytes);
      if (connect) {
        opts.connect(socket, connect.target, connect.proxyAuthorization, first.subarray(connect.length));
        return;
      }
      // Hand the socket to the HTTP server with the sniffed bytes put back in front.
      socket.pause();
      socket.unshift(first);
      httpServer.emit('connection', socket);
      socket.resume();
    });
  });
  return server;
}
