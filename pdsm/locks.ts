// Isolation for concurrent transactions in one process: strict two-phase locking on 64-byte
// granules of the global address space, shared for reads and exclusive for writes and frees, held
// until commit or abort. Deadlocks are impossible under wait-die: a transaction may only wait for
// younger ones (higher id); a younger one that meets an older holder dies with DPMS_TX_CONFLICT and
// is retried by Pdsm.transaction(). Waiting is bounded by a timeout, so a transaction that is
// abandoned while holding locks surfaces as DPMS_TIMEOUT instead of a hang.

import { DpmsError } from './errors';

export const LOCK_GRANULE_BYTES = 64;

interface Entry {
  exclusive: number;
  /** Ids of shared holders (few: a plain array beats a Set here). */
  readonly shared: number[];
  readonly waiters: Array<() => void>;
}

export interface LockOwner {
  readonly id: number;
  /** granule -> true when held exclusively. */
  readonly held: Map<number, boolean>;
}

export class LockTable {
  private readonly entries = new Map<number, Entry>();

  constructor(private readonly waitTimeoutMs: number) {}

  /**
   * Lock every granule of [address, address+length) in ascending order. Returns undefined when
   * every lock was free (the common case, with no promise to pay for), else a promise that
   * resolves when all are held.
   */
  lockRange(owner: LockOwner, address: number, length: number, exclusive: boolean): Promise<void> | undefined {
    const first = Math.floor(address / LOCK_GRANULE_BYTES);
    const last = Math.floor((address + Math.max(length, 1) - 1) / LOCK_GRANULE_BYTES);
    for (let granule = first; granule <= last; granule++) {
      const mine = owner.held.get(granule);
      if (mine === true || (mine === false && !exclusive)) continue;
      const blocker = this.tryLock(owner, granule, exclusive);
      if (blocker !== undefined) return this.lockSlowly(owner, granule, last, exclusive, blocker);
      owner.held.set(granule, exclusive);
    }
    return undefined;
  }

  private async lockSlowly(owner: LockOwner, from: number, last: number, exclusive: boolean, firstBlocker: number): Promise<void> {
    let blocker: number | undefined = firstBlocker;
    for (let granule = from; granule <= last; granule++) {
      if (granule !== from) {
        const mine = owner.held.get(granule);
        if (mine === true || (mine === false && !exclusive)) continue;
        blocker = this.tryLock(owner, granule, exclusive);
      }
      while (blocker !== undefined) {
        if (owner.id > blocker) {
          throw new DpmsError('DPMS_TX_CONFLICT', `transaction ${owner.id} conflicts with older transaction ${blocker}; retry it`);
        }
        await this.wait(granule);
        blocker = this.tryLock(owner, granule, exclusive);
      }
      owner.held.set(granule, exclusive);
    }
  }

  /** Release every lock the owner holds and wake whoever waits on them. */
  releaseAll(owner: LockOwner): void {
    for (const granule of owner.held.keys()) {
      const entry = this.entries.get(granule);
      if (!entry) continue;
      if (entry.exclusive === owner.id) entry.exclusive = 0;
      removeId(entry.shared, owner.id);
      if (entry.exclusive === 0 && entry.shared.length === 0) this.entries.delete(granule);
      if (entry.waiters.length > 0) for (const wake of entry.waiters.splice(0)) wake();
    }
    owner.held.clear();
  }

  /** Take the lock, or return the id of the oldest transaction that holds it in a conflicting mode. */
  private tryLock(owner: LockOwner, granule: number, exclusive: boolean): number | undefined {
    let entry = this.entries.get(granule);
    if (!entry) {
      entry = { exclusive: 0, shared: [], waiters: [] };
      this.entries.set(granule, entry);
    }
    if (entry.exclusive !== 0 && entry.exclusive !== owner.id) return entry.exclusive;
    if (!exclusive) {
      if (entry.exclusive !== owner.id && !entry.shared.includes(owner.id)) entry.shared.push(owner.id);
      return undefined;
    }
    let oldest: number | undefined;
    for (const sharer of entry.shared) {
      if (sharer !== owner.id && (oldest === undefined || sharer < oldest)) oldest = sharer;
    }
    if (oldest !== undefined) return oldest;
    removeId(entry.shared, owner.id);
    entry.exclusive = owner.id;
    return undefined;
  }

  private wait(granule: number): Promise<void> {
    const entry = this.entries.get(granule)!;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const index = entry.waiters.indexOf(wake);
        if (index >= 0) entry.waiters.splice(index, 1);
        reject(new DpmsError('DPMS_TIMEOUT', `lock wait exceeded ${this.waitTimeoutMs} ms`));
      }, this.waitTimeoutMs);
      const wake = (): void => {
        clearTimeout(timer);
        resolve();
      };
      entry.waiters.push(wake);
    });
  }
}

function removeId(ids: number[], id: number): void {
  const index = ids.indexOf(id);
  if (index >= 0) ids.splice(index, 1);
}
