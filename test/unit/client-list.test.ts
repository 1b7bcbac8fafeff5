import assert from 'node:assert/strict';
import { ClientList, type Listed } from '../../src/proxy/client-list';

class Item implements Listed {
  listIndex = -1;
  constructor(readonly id: number) {}
}

describe("ClientList (the server's open connections)", () => {
  it('adds, removes from anywhere and counts; a removed item is not removed twice', () => {
    const list = new ClientList<Item>();
    const items = Array.from({ length: 6 }, (_, i) => new Item(i));
    for (const it of items) list.add(it);
    assert.equal(list.size, 6);
    assert.equal(list.delete(items[2]), true);
    assert.equal(list.delete(items[2]), false);
    assert.equal(list.delete(items[0]), true);
    assert.equal(list.size, 4);
    assert.deepEqual(
      list
        .toArray()
        .map((i) => i.id)
        .sort(),
      [1, 3, 4, 5],
    );
    assert.equal(list.delete(new Item(9)), false);
  });

  it('visits each item once while the visit removes the item it is given', () => {
    const list = new ClientList<Item>();
    for (let i = 0; i < 10; i++) list.add(new Item(i));
    const seen: number[] = [];
    list.forEach((it) => {
      seen.push(it.id);
      if (it.id % 2 === 0) list.delete(it);
    });
    assert.deepEqual(
      seen.sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    assert.deepEqual(
      list
        .toArray()
        .map((i) => i.id)
        .sort((a, b) => a - b),
      [1, 3, 5, 7, 9],
    );
  });
});
