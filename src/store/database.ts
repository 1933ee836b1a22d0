// Opens the embedded SQLite store and brings its schema up to date.
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { accessSync, constants, mkdirSync, readdirSync, readFileSync, statfsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type Db = Database.Database;

export class StoreError extends Error {}

/**
 * The database cannot be written (disk full, read-only, I/O error, locked): the control
 * API answers 503 and the proxy keeps deciding from memory until a write succeeds again.
 */
export class StoreUnavailableError extends StoreError {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

// SQLite result codes (better-sqlite3 puts the extended name in `code`) that say the
// storage, not the statement, is the problem.
const UNAVAILABLE = /^SQLITE_(FULL|IOERR|READONLY|CANTOPEN|BUSY|LOCKED|NOMEM|PROTOCOL|CORRUPT|NOTADB)/;

/** `err` as a StoreUnavailableError when it is a storage failure; null for anything else. */
export function storeUnavailable(err: unknown): StoreUnavailableError | null {
  if (err instanceof StoreUnavailableError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !UNAVAILABLE.test(code)) return null;
  return new StoreUnavailableError(`${(err as Error).message} (${code})`, code);
}

/** Why `dataDir` cannot hold the database, in words an operator can act on; null if that is not it. */
function diagnoseDataDir(dataDir: string): string | null {
  try {
    accessSync(dataDir, constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EROFS') return `${dataDir} is on a read-only file system`;
    if (code === 'EACCES' || code === 'EPERM') return `${dataDir} is not writable by this user`;
  }
  try {
    const fs = statfsSync(dataDir);
    const free = fs.bavail * fs.bsize;
    if (free < 1024 * 1024) return `the file system holding ${dataDir} is full (${free} bytes free)`;
  } catch {
    /* no statfs: nothing to add */
  }
  return null;
}

/** migrations/ at the package root (this file runs from dist/src/store/). */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/', import.meta.url));

export function openDatabase(dataDir: string, migrationsDir = MIGRATIONS_DIR): Db {
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    const why = diagnoseDataDir(dirname(dataDir));
    throw new StoreError(`cannot create data dir ${dataDir}: ${(err as Error).message}${why ? ` (${why})` : ''}`);
  }
  const path = join(dataDir, 'sluice.db');
  const cannot = (err: unknown): StoreError => {
    const why = diagnoseDataDir(dataDir);
    return new StoreError(`cannot open ${path}: ${(err as Error).message}${why ? ` (${why})` : ''}`);
  };
  let db: Db | undefined;
  try {
    db = new Database(path);
    // WAL: readers never block the writer; NORMAL sync survives a process crash (the
    // WAL is fsynced at checkpoints), which is the failure we must not lose sessions to.
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
  } catch (err) {
    // Never leave the file open behind a failed start (it would pin the file system).
    db?.close();
    throw cannot(err);
  }
  try {
    migrate(db, migrationsDir);
  } catch (err) {
    db.close();
    throw err instanceof StoreError ? err : cannot(err);
  }
  return db;
}

interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

function readMigrations(dir: string): Migration[] {
  const out: Migration[] = [];
  for (const file of readdirSync(dir).sort()) {
    const m = /^(\d{3,})_([a-z0-9_]+)\.sql$/.exec(file);
    if (!m) continue;
    const sql = readFileSync(join(dir, file), 'utf8');
    out.push({ version: Number(m[1]), name: m[2]!, sql, checksum: createHash('sha256').update(sql).digest('hex') });
  }
  return out;
}

/**
 * Applies pending migrations in order, each in its own transaction. An applied migration
 * whose file changed since is refused: schema history must never be rewritten.
 */
export function migrate(db: Db, dir: string): void {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)`);
  const applied = new Map(
    (db.prepare('SELECT version, name, checksum FROM schema_migrations').all() as Array<{ version: number; name: string; checksum: string }>).map(
      (r) => [r.version, r],
    ),
  );
  const record = db.prepare('INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)');
  for (const m of readMigrations(dir)) {
    const done = applied.get(m.version);
    if (done) {
      if (done.checksum !== m.checksum) {
        throw new StoreError(
          `migration ${String(m.version).padStart(3, '0')}_${m.name}.sql was edited after it was applied (checksum mismatch); add a new migration instead`,
        );
      }
      continue;
    }
    db.transaction(() => {
      db.exec(m.sql);
      record.run(m.version, m.name, m.checksum, Date.now());
    })();
  }
}
