// Parsed rule patterns, kept by their text. Launchers send the same rules container after
// container (the registries and mirrors a build needs), and parsing a destination (IDNA,
// IP spellings, CIDR normalisation) and a port list was a tenth of the CPU of a session
// create. Parsing is a pure function of the text and nothing modifies a parsed matcher,
// so one parse can serve every rule with that text. Only successful parses are kept (an
// invalid pattern is parsed again each time, to report it).
//
// At most `capacity` entries, in two generations: new parses go into the young one; when
// it holds half the capacity, it becomes the old one and the previous old one is dropped
// whole. A text found in the old generation moves to the young one, so what is in use
// stays. (Evicting one entry at a time from a Map, oldest first, costs as much as a parse:
// each eviction walks past the holes the previous ones left.)
export class ParseCache<T> {
  private young = new Map<string, T>();
  private old = new Map<string, T>();

  constructor(
    private readonly parse: (text: string) => T,
    readonly capacity: number,
  ) {}

  get(text: string): T {
    const hit = this.young.get(text);
    if (hit !== undefined) return hit;
    let value = this.old.get(text);
    if (value === undefined) value = this.parse(text);
    if (this.young.size >= this.capacity / 2) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(text, value);
    return value;
  }

  get size(): number {
    return this.young.size + this.old.size;
  }
}
