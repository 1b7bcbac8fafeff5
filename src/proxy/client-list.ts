/**
 * The server's open client connections: add, remove, count, visit.
 *
 * Not a Set. With a new connection per request, a Set's hash table is rebuilt every few dozen
 * additions, and each table left behind (in the old generation, freed only by a full GC) still
 * points at the connections that were open when it was replaced. A scavenge takes those pointers
 * for live ones, so every connection's objects were copied and promoted as if long-lived
 * (docs/performance.md). Here a removed connection's slot is overwritten at once; nothing dead
 * keeps it.
 */
export interface Listed {
  /** The connection's slot in its list; -1 when not in one. */
  listIndex: number;
}

export class ClientList<T extends Listed> {
  private readonly items: Array<T | undefined> = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  add(item: T): void {
    item.listIndex = this.count;
    this.items[this.count++] = item;
  }

  delete(item: T): boolean {
    const i = item.listIndex;
    if (i < 0 || i >= this.count || this.items[i] !== item) return false;
    // The last one moves into the hole: O(1), and the freed slot is cleared.
    const last = this.items[--this.count]!;
    this.items[i] = last;
    last.listIndex = i;
    this.items[this.count] = undefined;
    item.listIndex = -1;
    return true;
  }

  /** Each item once, also when `visit` removes the item it is given (back to front for that). */
  forEach(visit: (item: T) => void): void {
    for (let i = this.count - 1; i >= 0; i--) {
      if (i >= this.count) continue;
      visit(this.items[i]!);
    }
  }

  toArray(): T[] {
    return this.items.slice(0, this.count) as T[];
  }
}
