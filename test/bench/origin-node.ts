// Fallback origin when nginx is not installed: a plain Node HTTP server on its own
// process (never in the bench's event loop). argv: host port small-file bulk-file.
import { createReadStream, readFileSync, statSync } from 'node:fs';
import http from 'node:http';

const [host, portText, smallFile, bulkFile] = process.argv.slice(2) as [string, string, string, string];
const small = readFileSync(smallFile);
const bulkSize = statSync(bulkFile).size;

const server = http.createServer((req, res) => {
  if (req.url === '/small') {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': small.length });
    res.end(small);
  } else if (req.url === '/bulk') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bulkSize });
    createReadStream(bulkFile, { highWaterMark: 1 << 20 }).pipe(res);
  } else {
    res.writeHead(404, { 'content-length': 0 });
    res.end();
  }
});
// Idle-scale holds thousands of tunnels open without a request: do not time them out.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 300_000;
server.requestTimeout = 0;
server.maxRequestsPerSocket = 0;
server.listen({ host, port: Number(portText), backlog: 4096 });
process.on('SIGTERM', () => process.exit(0));
