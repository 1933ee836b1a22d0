// Opens the embedded SQLite store and brings its schema up to date.
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type Db = Database.Database;

export class StoreError extends Error {}

/** migrations/ at the package root (this file runs from dist/src/store/). */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/', import.meta.url));

export function openDatabase(dataDir: string, migrationsDir = MIGRATIONS_DIR): Db {
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new StoreError(`cannot create data dir ${dataDir}: ${(err as Error).message}`);
  }
  let db: Db;
  try {
    db = new Database(join(dataDir, 'sluice.db'));
    // WAL: readers never block the writer; NORMAL sync survives a process crash (the
    // WAL is fsynced at checkpoints), which is the failure we must not lose sessions to.
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
  } catch (err) {
    throw new StoreError(`cannot open ${join(dataDir, 'sluice.db')}: ${(err as Error).message}`);
  }
  try {
    migrate(db, migrationsDir);
  } catch (err) {
    db.close();
    throw err;
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
