// The copy-on-write B+tree of pDKVS: how readers find keys with one-sided READs (NodeReader, lookup,
// Cursor) and how a commit builds the next version of the tree in DRAM (TreeBuilder) before it is
// written out of place and published by the meta record.
//
// Published nodes never change, so a node is identified by (address, birth version) and a client may
// cache it for as long as it likes: a cached entry is either exactly what is in PM or unreachable.
// A node that was reclaimed and reused fails its birth/checksum check (format.ts), and the reader
// starts over from a fresh meta record.

import type { ClusterClient, GlobalAddress } from '../pdsm';
import { decodeNode, decodeValue, nodeEncodedBytes, NodeKind, VALUE_HEADER_BYTES, type ExternalValue, type Internal, type Leaf, type LeafValue, type Meta, type Ref, type TreeNode } from './format';

/**
 * Nodes split when their encoding grows past these (a node with one entry may be larger). Every
 * commit rewrites the path to each leaf it changes, so small nodes keep the copy-on-write cheap.
 */
export const LEAF_TARGET_BYTES = 2048;
export const INTERNAL_TARGET_BYTES = 2048;
/** Values up to this size live in the leaf; larger ones in an object of their own. */
export const INLINE_VALUE_BYTES = 128;

/** Thrown inside a read when it met reclaimed memory: the caller starts over from a fresh meta record. */
export class StaleRead extends Error {
  constructor() {
    super('read met a reclaimed node or value');
  }
}

// ---- reading ----------------------------------------------------------------------------------------

/** Fetches tree nodes and values with one-sided READs, keeping decoded nodes in a bounded cache. */
export class NodeReader {
  private readonly cache = new Map<number, { birth: number; node: TreeNode; bytes: number }>();
  private cachedBytes = 0;

  constructor(private readonly client: ClusterClient, private readonly cacheBytes = 64 * 1024 * 1024) {}

  /** The node `ref` names when it is cached (no await on the hot path), else undefined. */
  cached(ref: Ref): TreeNode | undefined {
    const cached = this.cache.get(ref.address);
    return cached !== undefined && cached.birth === ref.birth ? cached.node : undefined;
  }

  /** The node `ref` names; throws StaleRead when the memory no longer holds it. */
  async node(ref: Ref): Promise<TreeNode> {
    const cached = this.cached(ref);
    if (cached !== undefined) return cached;
    const node = decodeNode(await this.client.read(ref.address, ref.length), ref);
    if (node === undefined) throw new StaleRead();
    this.remember(ref, node);
    return node;
  }

  /** Remember a node this client wrote (it never needs to read it back). */
  remember(ref: Ref, node: TreeNode): void {
    const previous = this.cache.get(ref.address);
    if (previous !== undefined) {
      this.cachedBytes -= previous.bytes;
      this.cache.delete(ref.address);
    }
    this.cache.set(ref.address, { birth: ref.birth, node, bytes: ref.length });
    this.cachedBytes += ref.length;
    // Evict the oldest entries (insertion order): simple, and hot upper levels are re-inserted often.
    for (const [address, entry] of this.cache) {
      if (this.cachedBytes <= this.cacheBytes) break;
      this.cache.delete(address);
      this.cachedBytes -= entry.bytes;
    }
  }

  /** The bytes of a leaf value (inline, or fetched and checked); throws StaleRead when reclaimed. */
  async value(value: LeafValue): Promise<Buffer> {
    if (Buffer.isBuffer(value)) return value;
    const bytes = decodeValue(await this.client.read(value.address, VALUE_HEADER_BYTES + value.length), value);
    if (bytes === undefined) throw new StaleRead();
    return bytes;
  }
}

/**
 * Bytewise order, in JavaScript: for the short keys of a node search this beats Buffer.compare, whose
 * cost is the call into C++, not the comparison.
 */
export function compareKeys(a: Buffer, b: Buffer): number {
  const length = a.length < b.length ? a.length : b.length;
  if (length > 64) return Buffer.compare(a, b);
  for (let i = 0; i < length; i++) {
    const difference = a[i] - b[i];
    if (difference !== 0) return difference;
  }
  return a.length - b.length;
}

/** Index of the child of `node` whose subtree may hold `key`. */
export function childIndex(keys: readonly Buffer[], key: Buffer): number {
  let low = 1;
  let high = keys.length - 1;
  let found = 0;
  while (low <= high) {
    const middle = (low + high) >>> 1;
    if (compareKeys(keys[middle], key) <= 0) {
      found = middle;
      low = middle + 1;
    } else {
      high = middle - 1;
    }
  }
  return found;
}

/** The first index whose key is >= `key` (keys.length when none). */
export function lowerBound(keys: readonly Buffer[], key: Buffer): number {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (compareKeys(keys[middle], key) < 0) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** The leaf value stored for `key` in the tree of `meta`, or undefined. */
export async function lookup(reader: NodeReader, meta: Meta, key: Buffer): Promise<LeafValue | undefined> {
  if (meta.height === 0) return undefined;
  let node = reader.cached(meta.root) ?? await reader.node(meta.root);
  while (node.kind === NodeKind.internal) {
    const child = node.children[childIndex(node.keys, key)];
    node = reader.cached(child) ?? await reader.node(child);
  }
  const index = lowerBound(node.keys, key);
  return index < node.keys.length && compareKeys(node.keys[index], key) === 0 ? node.values[index] : undefined;
}

/** A position in the tree of one version: the path from the root to a leaf entry. */
export class Cursor {
  private path: Array<{ node: Internal; index: number }> = [];
  private leaf: Leaf | undefined;
  private index = 0;

  constructor(private readonly reader: NodeReader, private readonly meta: Meta) {}

  /** The entry under the cursor, or undefined when it ran off either end. */
  get key(): Buffer | undefined { return this.leaf?.keys[this.index]; }
  get value(): LeafValue | undefined { return this.leaf?.values[this.index]; }

  /**
   * Go to the first entry >= key (forward) or the last entry <= key (reverse); `exclusive` skips an
   * entry equal to key; no key: the first (forward) or last (reverse) entry.
   */
  async seek(key: Buffer | undefined, forward: boolean, exclusive: boolean): Promise<void> {
    this.path = [];
    this.leaf = undefined;
    if (this.meta.height === 0) return;
    let node = await this.reader.node(this.meta.root);
    while (node.kind === NodeKind.internal) {
      const index = key !== undefined ? childIndex(node.keys, key) : forward ? 0 : node.children.length - 1;
      this.path.push({ node, index });
      node = await this.reader.node(node.children[index]);
    }
    this.leaf = node;
    if (forward) {
      this.index = key === undefined ? 0 : lowerBound(node.keys, key);
      if (key !== undefined && exclusive && this.index < node.keys.length && compareKeys(node.keys[this.index], key) === 0) this.index++;
      if (this.index >= node.keys.length) await this.nextLeaf(true);
    } else {
      if (key === undefined) {
        this.index = node.keys.length - 1;
      } else {
        const at = lowerBound(node.keys, key);
        this.index = at < node.keys.length && compareKeys(node.keys[at], key) === 0 && !exclusive ? at : at - 1;
      }
      if (this.index < 0) await this.nextLeaf(false);
    }
  }

  /** Move one entry forward or backward. */
  async step(forward: boolean): Promise<void> {
    if (this.leaf === undefined) return;
    this.index += forward ? 1 : -1;
    if (this.index < 0 || this.index >= this.leaf.keys.length) await this.nextLeaf(forward);
  }

  private async nextLeaf(forward: boolean): Promise<void> {
    // Climb until a level has a sibling in the direction of travel, then descend its nearest edge.
    for (;;) {
      let level = this.path.length - 1;
      while (level >= 0) {
        const entry = this.path[level];
        const next = entry.index + (forward ? 1 : -1);
        if (next >= 0 && next < entry.node.children.length) {
          entry.index = next;
          break;
        }
        level--;
      }
      if (level < 0) {
        this.leaf = undefined;
        return;
      }
      this.path.length = level + 1;
      let node = await this.reader.node(this.path[level].node.children[this.path[level].index]);
      while (node.kind === NodeKind.internal) {
        const index = forward ? 0 : node.children.length - 1;
        this.path.push({ node, index });
        node = await this.reader.node(node.children[index]);
      }
      this.leaf = node;
      this.index = forward ? 0 : node.keys.length - 1;
      if (node.keys.length > 0) return;
    }
  }
}

// ---- building the next version ------------------------------------------------------------------------

/** A node being rewritten by this commit: children are published refs or other nodes being rewritten. */
class DirtyLeaf {
  readonly kind = NodeKind.leaf;
  constructor(readonly keys: Buffer[], readonly values: LeafValue[]) {}
}
class DirtyInternal {
  readonly kind = NodeKind.internal;
  constructor(readonly keys: Buffer[], readonly children: Array<Ref | DirtyNode>) {}
}
type DirtyNode = DirtyLeaf | DirtyInternal;

// A class check, not a property probe: this runs for every child of every rewritten node.
const isRef = (child: Ref | DirtyNode): child is Ref => !(child instanceof DirtyLeaf || child instanceof DirtyInternal);

/** What publishing wrote: the new root and every new node with its bytes (for the cache). */
export interface Published {
  readonly root: Ref | undefined;
  readonly nodes: Array<{ ref: Ref; node: TreeNode }>;
}

/**
 * The next version of a tree, built in DRAM by one commit: the first change below a published node
 * copies it (and retires the original), later changes edit the copy. Nodes split when they outgrow
 * their target size; empty nodes are removed and a root with one child is collapsed.
 */
export class TreeBuilder {
  private root: Ref | DirtyNode | undefined;
  /** Published nodes and values this version no longer uses. */
  readonly retired: GlobalAddress[] = [];
  height: number;
  count: number;

  constructor(private readonly reader: NodeReader, meta: Meta) {
    this.root = meta.height === 0 ? undefined : meta.root;
    this.height = meta.height;
    this.count = meta.count;
  }

  get changed(): boolean { return this.root !== undefined && !isRef(this.root) || this.retired.length > 0; }

  /** The value of `key` in the version being built. */
  async get(key: Buffer): Promise<LeafValue | undefined> {
    let node = this.root === undefined ? undefined : await this.view(this.root);
    if (node === undefined) return undefined;
    while (node.kind === NodeKind.internal) node = await this.view(node.children[childIndex(node.keys, key)]);
    const index = lowerBound(node.keys, key);
    return index < node.keys.length && compareKeys(node.keys[index], key) === 0 ? node.values[index] : undefined;
  }

  /** Insert or replace; a replaced external value is retired. */
  async put(key: Buffer, value: LeafValue): Promise<void> {
    if (this.root === undefined) {
      this.root = new DirtyLeaf([key], [value]);
      this.height = 1;
      this.count++;
      return;
    }
    const path = await this.descendForWrite(key);
    const leaf = path[path.length - 1].node as DirtyLeaf;
    const index = lowerBound(leaf.keys, key);
    if (index < leaf.keys.length && compareKeys(leaf.keys[index], key) === 0) {
      this.retireValue(leaf.values[index]);
      leaf.values[index] = value;
    } else {
      leaf.keys.splice(index, 0, key);
      leaf.values.splice(index, 0, value);
      this.count++;
    }
    this.splitUp(path);
  }

  /** Delete; returns whether the key was there. */
  async del(key: Buffer): Promise<boolean> {
    if ((await this.get(key)) === undefined) return false;
    const path = await this.descendForWrite(key);
    const leaf = path[path.length - 1].node as DirtyLeaf;
    const index = lowerBound(leaf.keys, key);
    this.retireValue(leaf.values[index]);
    leaf.keys.splice(index, 1);
    leaf.values.splice(index, 1);
    this.count--;
    // Remove nodes that became empty, bottom up.
    for (let level = path.length - 1; level > 0 && path[level].node.keys.length === 0; level--) {
      const parent = path[level - 1];
      const internal = parent.node as DirtyInternal;
      internal.keys.splice(parent.index, 1);
      internal.children.splice(parent.index, 1);
    }
    if (path[0].node.keys.length === 0) {
      this.root = undefined;
      this.height = 0;
    }
    // A root with one child is replaced by that child.
    while (this.root !== undefined && !isRef(this.root) && this.root.kind === NodeKind.internal && this.root.children.length === 1) {
      this.root = this.root.children[0];
      this.height--;
    }
    return true;
  }

  /** The keys `accept` places inside the range, in order (reverse: descending), at most `limit` (-1: all), in the version being built (for clear). */
  async keysIn(accept: (key: Buffer) => -1 | 0 | 1, reverse: boolean, limit: number): Promise<Buffer[]> {
    // accept: -1 before the range, 0 inside, 1 after it (in key order).
    const keys: Buffer[] = [];
    const walk = async (child: Ref | DirtyNode): Promise<boolean> => {
      const node = await this.view(child);
      const order = [...node.keys.keys()];
      if (reverse) order.reverse();
      for (const i of order) {
        if (node.kind === NodeKind.internal) {
          // Skip children wholly before (forward) or after (reverse) the range.
          const nextKey = node.keys[i + 1];
          if (!reverse && i + 1 < node.keys.length && accept(nextKey) < 0) continue;
          if (reverse && i > 0 && accept(node.keys[i]) > 0) continue;
          if (!(await walk(node.children[i]))) return false;
        } else {
          const position = accept(node.keys[i]);
          if (position === 0) {
            keys.push(node.keys[i]);
            if (keys.length === limit) return false;
          } else if ((position > 0 && !reverse) || (position < 0 && reverse)) {
            return false;
          }
        }
      }
      return true;
    };
    if (this.root !== undefined && limit !== 0) await walk(this.root);
    return keys;
  }

  /**
   * Write-out order: assign every rewritten node its size, let `allocate` place it, and encode it with
   * its children's addresses (children first). Returns the new root and the nodes.
   */
  async publish(birth: number, allocate: (node: TreeNode) => Promise<GlobalAddress>): Promise<Published> {
    const nodes: Array<{ ref: Ref; node: TreeNode }> = [];
    const write = async (child: Ref | DirtyNode): Promise<Ref> => {
      if (isRef(child)) return child;
      let node: TreeNode;
      if (child.kind === NodeKind.leaf) {
        node = { kind: NodeKind.leaf, keys: child.keys, values: child.values };
      } else {
        const children: Ref[] = [];
        for (const grandchild of child.children) children.push(isRef(grandchild) ? grandchild : await write(grandchild));
        node = { kind: NodeKind.internal, keys: child.keys, children };
      }
      const length = nodeEncodedBytes(node);
      const ref: Ref = { address: await allocate(node), birth, length };
      nodes.push({ ref, node });
      return ref;
    };
    return { root: this.root === undefined ? undefined : await write(this.root), nodes };
  }

  // Walk down to the leaf for `key`, copying every published node on the way (retiring the originals).
  private async descendForWrite(key: Buffer): Promise<Array<{ node: DirtyNode; index: number }>> {
    this.root = await this.dirty(this.root!);
    const path: Array<{ node: DirtyNode; index: number }> = [];
    let node: DirtyNode = this.root;
    while (node.kind === NodeKind.internal) {
      const index = childIndex(node.keys, key);
      path.push({ node, index });
      const child: DirtyNode = await this.dirty(node.children[index]);
      node.children[index] = child;
      node = child;
    }
    path.push({ node, index: -1 });
    return path;
  }

  private async dirty(child: Ref | DirtyNode): Promise<DirtyNode> {
    if (!isRef(child)) return child;
    const node = await this.reader.node(child);
    this.retired.push(child.address);
    return node.kind === NodeKind.leaf ? new DirtyLeaf([...node.keys], [...node.values]) : new DirtyInternal([...node.keys], [...node.children]);
  }

  private async view(child: Ref | DirtyNode): Promise<TreeNode | DirtyNode> {
    return isRef(child) ? this.reader.node(child) : child;
  }

  private retireValue(value: LeafValue): void {
    if (!Buffer.isBuffer(value)) this.retired.push((value as ExternalValue).address);
  }

  // Split the nodes on `path` (leaf last) that outgrew the target, bottom up, growing a new root if needed.
  private splitUp(path: Array<{ node: DirtyNode; index: number }>): void {
    for (let level = path.length - 1; level >= 0; level--) {
      const node = path[level].node;
      if (node.keys.length < 2 || nodeEncodedBytes(node as TreeNode) <= (node.kind === NodeKind.leaf ? LEAF_TARGET_BYTES : INTERNAL_TARGET_BYTES)) return;
      const right = splitNode(node);
      if (level === 0) {
        this.root = new DirtyInternal([node.keys[0], right.keys[0]], [node, right]);
        this.height++;
        return;
      }
      const parent = path[level - 1];
      const internal = parent.node as DirtyInternal;
      internal.keys.splice(parent.index + 1, 0, right.keys[0]);
      internal.children.splice(parent.index + 1, 0, right);
    }
  }
}

/** Move the upper half (by encoded bytes) of `node` into a new right sibling. */
function splitNode(node: DirtyNode): DirtyNode {
  const total = nodeEncodedBytes(node as TreeNode);
  let bytes = 0;
  let at = 0;
  while (at < node.keys.length - 1 && bytes < total / 2) {
    bytes += node.kind === NodeKind.leaf
      ? 7 + node.keys[at].length + (Buffer.isBuffer(node.values[at]) ? (node.values[at] as Buffer).length : 16)
      : 2 + node.keys[at].length + 20;
    at++;
  }
  at = Math.max(1, at);
  if (node.kind === NodeKind.leaf) return new DirtyLeaf(node.keys.splice(at), node.values.splice(at));
  return new DirtyInternal(node.keys.splice(at), node.children.splice(at));
}
