// The half of `sluice run --isolate` that lives inside the sandbox's network namespace:
// it listens on loopback there (the only network the namespace has) and carries each
// connection over a Unix socket to the `sluice run` process outside, which connects to the
// sluice listener. Filesystem Unix sockets are not scoped by network namespaces, so this
// is the one path out, and it ends at the proxy.
//
//   node isolate-relay.js 127.0.0.1:3128=/tmp/sluice-run-x/http.sock 127.0.0.1:1080=/tmp/.../socks.sock
//
// Prints "ready" once every listener is bound; exits when its stdin closes (its parent is
// gone) or on SIGTERM. SIGINT (a Ctrl-C at the terminal) is ignored: the sandboxed command
// may still need the proxy while it shuts down, and `sluice run` ends the relay after it.
import net from 'node:net';

interface Route {
  host: string;
  port: number;
  socketPath: string;
}

function parseRoute(arg: string): Route {
  const eq = arg.indexOf('=');
  const listen = arg.slice(0, eq);
  const colon = listen.lastIndexOf(':');
  const port = Number(listen.slice(colon + 1));
  if (eq < 0 || colon < 0 || !Number.isInteger(port) || port < 1 || port > 65_535) throw new Error(`bad route ${JSON.stringify(arg)} (want HOST:PORT=SOCKET)`);
  return { host: listen.slice(0, colon), port, socketPath: arg.slice(eq + 1) };
}

function relay(route: Route): Promise<net.Server> {
  const server = net.createServer((inside) => {
    const outside = net.connect(route.socketPath);
    inside.pipe(outside);
    outside.pipe(inside);
    const end = (): void => {
      inside.destroy();
      outside.destroy();
    };
    inside.on('error', end);
    outside.on('error', end);
    inside.on('close', end);
    outside.on('close', end);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(route.port, route.host, () => resolve(server));
  });
}

async function main(): Promise<void> {
  const routes = process.argv.slice(2).map(parseRoute);
  if (routes.length === 0) throw new Error('no routes given');
  await Promise.all(routes.map(relay));
  process.stdout.write('ready\n');
  const exit = (): never => process.exit(0);
  process.stdin.on('end', exit);
  process.stdin.on('close', exit);
  process.stdin.resume();
  process.on('SIGTERM', exit);
  process.on('SIGINT', () => undefined);
}

main().catch((err: unknown) => {
  process.stderr.write(`sluice isolate relay: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
