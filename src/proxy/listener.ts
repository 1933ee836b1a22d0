// A proxy port. The first byte tells the protocol apart (0x04/0x05 = SOCKS, anything
// else = HTTP), so every port serves every protocol.
import net from 'node:net';
import type http from 'node:http';
import { handleSocks, type SocksHandlerOptions } from './socks-handler.js';

export function createProxyListener(httpServer: http.Server, socks: SocksHandlerOptions): net.Server {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    socket.on('error', () => socket.destroy());
    // A client that connects and says nothing must not hold the socket forever.
    socket.setTimeout(socks.handshakeTimeoutMs, () => socket.destroy());
    // Nor one that half-closes without a byte (the socket allows half-open for tunnels).
    const silentEnd = (): void => void socket.destroy();
    socket.once('end', silentEnd);
    socket.once('data', (first: Buffer) => {
      socket.setTimeout(0);
      socket.off('end', silentEnd);
      if (first[0] === 0x04 || first[0] === 0x05) {
        handleSocks(socket, first, socks);
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
