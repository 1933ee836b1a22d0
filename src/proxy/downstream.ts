// Upstream -> client bytes for tunnels without allocating per read. A stream pipe gets a
// fresh 64 KiB Buffer for every read; on a bulk transfer that garbage drives frequent
// collections over the whole heap (the bench profile showed GC as the largest cost after
// syscalls). Here one buffer per tunnel is reused while writes complete synchronously, and
// replaced only when a write is still queued (it still references the bytes).
//
// A tunnel starts with a small buffer and moves to a full-size one the first time a read
// fills it (a download, not a short answer): ten thousand idle tunnels then hold 1 KiB
// each, not 64 KiB of memory that, recycled from earlier traffic, is resident. Full-size
// buffers are recycled between tunnels (a bounded spare list). It cannot be one buffer
// shared by all tunnels: each socket reads into the buffer it was last given.
import type net from 'node:net';

// Small enough to come from Node's shared allocation pool (each tunnel its own slice).
const FIRST_READ_SIZE = 1024;
const READ_SIZE = 64 * 1024;
/** At most this many spare full-size buffers (4 MiB) wait for the next download. */
const SPARE_LIMIT = 64;
const spares: Buffer[] = [];

function fullSizeBuffer(): Buffer {
  return spares.pop() ?? Buffer.allocUnsafe(READ_SIZE);
}

export class Downstream {
  private buf: Buffer = Buffer.allocUnsafe(FIRST_READ_SIZE);
  private target: net.Socket | null = null;
  /** Bytes that arrived before the client was attached (e.g. a server banner). */
  private early: Buffer[] | null = null;
  private ended = false;
  private upstream: net.Socket | null = null;

  /** Pass as `onread` to net.connect. */
  readonly onread = {
    buffer: (): Buffer => this.buf,
    callback: (n: number): boolean => this.onData(n),
  };

  bind(upstream: net.Socket): void {
    this.upstream = upstream;
    upstream.once('end', () => {
      this.ended = true;
      this.target?.end();
    });
    // Once closed the socket reads no more, and no queued write refers to the current
    // buffer (onData replaces it whenever a write is left queued): it is free to reuse.
    upstream.once('close', () => {
      if (this.buf.length === READ_SIZE && spares.length < SPARE_LIMIT) spares.push(this.buf);
    });
  }

  /** Starts delivering to the client (flushing anything that arrived before). */
  attach(client: net.Socket): void {
    this.target = client;
    if (this.early) for (const chunk of this.early) client.write(chunk);
    this.early = null;
    if (this.ended) client.end();
    client.on('drain', () => this.upstream?.resume());
  }

  private onData(n: number): boolean {
    const chunk = this.buf.subarray(0, n);
    const client = this.target;
    if (!client) {
      (this.early ??= []).push(Buffer.from(chunk)); // copy: the buffer is reused for the next read
      return true;
    }
    if (client.destroyed) return false;
    const flowing = client.write(chunk);
    if (client.writableLength > 0) this.buf = Buffer.allocUnsafe(READ_SIZE);
    else if (n === this.buf.length && n < READ_SIZE) this.buf = fullSizeBuffer();
    // false pauses the upstream until the client drains: backpressure bounds the buffer.
    return flowing;
  }
}
