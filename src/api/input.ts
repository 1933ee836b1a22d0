// Turning untrusted request input into typed values, or a 400 naming each bad field.
import type { z } from 'zod';

export class BadInput extends Error {
  constructor(readonly details: string[]) {
    super('invalid request');
  }
}

/** Parses with a zod schema, turning failures into a 400 that names each bad field. */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, where: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  throw new BadInput(r.error.issues.map((i) => `${[where, ...i.path.map(String)].filter(Boolean).join('.')}: ${i.message}`));
}
