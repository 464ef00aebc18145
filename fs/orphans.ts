// Names of the orphan directory's entries, and which mounts are alive: what lets a mount at start
// (FileSystem.recoverOrphans) and `dpms check --repair` reclaim files that were unlinked while open
// in a mount that died.
//
//   gone-<ino>               a deletion in progress (nobody has it open): always reclaimable
//   open-<instance>-<ino>    unlinked while open in the mount whose client instance is <instance>
//   open-<ino>               the same, written before instances existed: its mount is unknown
//
// A mount is alive while some node lists a client with its instance (ClusterClient.status()).

import type { ClusterClient } from '../pdsm';

export type OrphanName =
  | { readonly kind: 'gone'; readonly ino: number }
  | { readonly kind: 'open'; readonly ino: number; readonly instance?: string };

export function orphanName(kind: 'gone' | 'open', ino: number, instance?: string): string {
  return kind === 'open' && instance !== undefined ? `open-${instance}-${ino}` : `${kind}-${ino}`;
}

/** What an orphan entry's name says, or undefined for a name this code never writes. */
export function parseOrphanName(name: string): OrphanName | undefined {
  const match = /^(gone|open)-(?:([0-9a-f]{16})-)?([0-9]{1,16})$/.exec(name);
  if (!match) return undefined;
  const ino = Number(match[3]);
  if (!Number.isSafeInteger(ino)) return undefined;
  if (match[1] === 'gone') return match[2] === undefined ? { kind: 'gone', ino } : undefined;
  return { kind: 'open', ino, instance: match[2] };
}

export interface Liveness {
  /** Whether the mount of that client instance is gone (no node lists it). */
  isDead(instance: string): boolean;
  /** Mount clients (other than `self`) connected to some node. */
  readonly otherMounts: number;
  /** Nodes that answered; with none, nothing is taken for dead. */
  readonly nodesAnswered: number;
}

/** How long an instance must stay unlisted before it counts as dead: a client that lost a node reconnects within this. */
export const DEAD_CONFIRM_MS = 1500;

/**
 * Which client instances the nodes list. `candidates` are the instances the caller would reclaim
 * for: when some are unlisted, the nodes are asked again after `confirmMs`, and only instances
 * missing both times count as dead (a client between two sessions is briefly listed nowhere).
 */
export async function mountLiveness(client: ClusterClient, candidates: readonly string[], confirmMs = DEAD_CONFIRM_MS): Promise<Liveness> {
  const listed = async (): Promise<{ instances: Set<string>; mounts: Set<string>; answered: number }> => {
    const instances = new Set<string>();
    const mounts = new Set<string>();
    let answered = 0;
    for (const row of await client.status()) {
      if (!row.status) continue;
      answered++;
      for (const summary of row.status.clients) {
        instances.add(summary.instance);
        if (summary.role === 'mount' && summary.instance !== client.info.instance) mounts.add(summary.instance);
      }
      // A node that lists only some of its clients cannot prove that an instance is absent.
      if (row.status.clientsOmitted > 0) answered = -Infinity;
    }
    return { instances, mounts, answered };
  };
  const first = await listed();
  let dead = new Set(candidates.filter((instance) => !first.instances.has(instance)));
  let mounts = first.mounts;
  let answered = first.answered;
  if (dead.size > 0 && answered > 0 && confirmMs > 0) {
    await new Promise((resolve) => setTimeout(resolve, confirmMs));
    const second = await listed();
    dead = new Set([...dead].filter((instance) => !second.instances.has(instance)));
    mounts = new Set([...mounts, ...second.mounts]);
    answered = Math.min(answered, second.answered);
  }
  const usable = answered > 0;
  return {
    isDead: (instance) => usable && dead.has(instance) && instance !== client.info.instance,
    otherMounts: mounts.size,
    nodesAnswered: Math.max(0, answered),
  };
}
