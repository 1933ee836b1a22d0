// Plain-text rendering for the CLI: aligned columns and key/value blocks.

export interface Column<T> {
  header: string;
  value: (row: T) => unknown;
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function formatTable<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const cells = [columns.map((c) => c.header), ...rows.map((row) => columns.map((c) => formatCell(c.value(row))))];
  const widths = columns.map((_, i) => Math.max(...cells.map((line) => (line[i] ?? '').length)));
  return cells.map((line) => alignLine(line, widths)).join('\n');
}

/** One `key  value` line per field, keys aligned; nested objects become `outer.inner` keys. */
export function formatKeyValues(record: Readonly<Record<string, unknown>>): string {
  const entries = flatten(record).map(([key, value]) => [key, formatField(key, value)] as const);
  const width = Math.max(0, ...entries.map(([key]) => key.length));
  return entries.map(([key, value]) => `${key.padEnd(width)}  ${value}`).join('\n');
}

/** A value as one line of text; `-` for missing, JSON for structures. */
export function formatCell(value: unknown): string {
  if (value === undefined || value === null || value === '') return '-';
  if (typeof value === 'string') return sanitize(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value) && value.every((v) => typeof v === 'string' || typeof v === 'number')) {
    return value.length === 0 ? '-' : sanitize(value.join(','));
  }
  return sanitize(JSON.stringify(value) ?? '-');
}

/** Timestamps (`*_at`) arrive as epoch milliseconds; ISO text is what a person can read. */
export function formatField(key: string, value: unknown): string {
  return key.endsWith('_at') ? formatTime(value) : formatCell(value);
}

export function formatTime(value: unknown): string {
  if (typeof value === 'number' && Number.isFinite(value)) {
    const d = new Date(value);
    if (!Number.isNaN(d.getTime())) return d.toISOString();
  }
  return formatCell(value);
}

function flatten(record: Readonly<Record<string, unknown>>, prefix = ''): Array<[string, unknown]> {
  return Object.entries(record).flatMap(([key, value]): Array<[string, unknown]> => {
    const name = `${prefix}${key}`;
    const nested = typeof value === 'object' && value !== null && !Array.isArray(value) && Object.keys(value).length > 0;
    return nested ? flatten(value as Record<string, unknown>, `${name}.`) : [[name, value]];
  });
}

function alignLine(line: readonly string[], widths: readonly number[]): string {
  return line
    .map((cell, i) => (i === line.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
    .join('  ')
    .trimEnd();
}

// Values come from the server (notes, names); control characters could move the cursor or
// recolour the terminal, and newlines would break the columns.
function sanitize(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}
