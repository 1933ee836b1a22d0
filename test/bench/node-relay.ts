// A reference point, not a peer: the least a Node.js relay can do per tunnel. It reads a
// CONNECT head or a no-auth SOCKS5 handshake from the first packet(s), dials, answers and
// pipes, with no identity, policy, audit or limits. The gap between it and sluice is what
// sluice's own work costs; the gap between it and the C proxies is what Node's socket layer
// costs. Run as `node node-relay.js PORT` (the bench starts it beside the peers).
import net from 'node:net';

const port = Number(process.argv[2]);
const HOST = '127.0.0.1';

function relay(client: net.Socket, host: string, destPort: number, reply: Buffer, rest: Buffer): void {
  const upstream = net.connect({ host, port: destPort, noDelay: true });
  upstream.on('error', () => client.destroy());
  client.on('error', () => upstream.destroy());
  client.pause();
  upstream.once('connect', () => {
    client.write(reply);
    if (rest.length > 0) upstream.write(rest);
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  });
  client.on('close', () => upstream.destroy());
  upstream.on('close', () => client.destroy());
}

const ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n');
const SOCKS_OK = Buffer.from([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);

function socks5(client: net.Socket, first: Buffer): void {
  let buf = first;
  let greeted = false;
  const step = (chunk?: Buffer): void => {
    if (chunk) buf = Buffer.concat([buf, chunk]);
    if (!greeted) {
      if (buf.length < 2 || buf.length < 2 + buf[1]!) return;
      buf = buf.subarray(2 + buf[1]!);
      greeted = true;
      client.write(Buffer.from([5, 0]));
    }
    if (buf.length < 5) return;
    const atyp = buf[3]!;
    const addrLen = atyp === 1 ? 4 : atyp === 4 ? 16 : 1 + buf[4]!;
    if (buf.length < 4 + addrLen + 2) return;
    const host = atyp === 1 ? [...buf.subarray(4, 8)].join('.') : atyp === 3 ? buf.toString('latin1', 5, 5 + buf[4]!) : net.isIPv6(HOST) ? HOST : '::1';
    const destPort = buf.readUInt16BE(4 + addrLen);
    client.off('data', step);
    relay(client, host, destPort, SOCKS_OK, buf.subarray(4 + addrLen + 2));
  };
  client.on('data', step);
  step();
}

net
  .createServer({ noDelay: true }, (client) => {
    client.on('error', () => client.destroy());
    client.once('data', (first: Buffer) => {
      if (first[0] === 5) return socks5(client, first);
      const end = first.indexOf('\r\n\r\n');
      const m = /^CONNECT ([^\s:]+):(\d+) /.exec(first.toString('latin1', 0, Math.max(0, end)));
      if (end < 0 || !m) return void client.destroy();
      relay(client, m[1]!, Number(m[2]), ESTABLISHED, first.subarray(end + 4));
    });
  })
  .listen(port, HOST);

process.on('SIGTERM', () => process.exit(0));
