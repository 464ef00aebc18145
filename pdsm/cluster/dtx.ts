// Transactions of a cluster client, over one-sided operations only (RPC just for new chunks).
//
// Execution: strict two-phase locking with exclusive locks taken by CAS on the owning node's lock
// table (no waiting: a lock held by another transaction is DPMS_TX_CONFLICT, and
// ClusterClient.transaction retries with random backoff, so there is no deadlock); reads are
// one-sided READs after locking; writes, allocations and frees are redo records in DRAM.
//
// Commit on one node: write the log into one of the client's lanes there and persist it (the commit
// point), apply the records with WRITEs (bitmap words with CAS loops), persist, void the lane
// (appliedGeneration), unlock.
//
// Commit on several nodes (two-phase commit decided at a coordinator, the participant with the
// lowest id): 1. write and persist a prepared log on every participant; the coordinator's lists the
// participants. 2. The commit point: CAS the coordinator lane's decision word from the value the
// client last saw to (generation, Committed), and persist it. A resolver that finds the log in doubt
// (a participant restarted, or the client died) CASes the same word to (generation, Aborted) first
// if it can, so exactly one outcome wins. 3. Apply on every participant, void the participants'
// lanes, then the coordinator's (with confirmedGeneration: nothing left to tell anyone), unlock.
// Any transport failure during commit abandons the client's sessions on every node: the nodes then
// settle the client's lanes exactly as if it had crashed (docs/ARCHITECTURE.md, "Distributed
// transactions"), so the client never needs to finish anything itself.

import { makeAddress, nodeOf, offsetOf, type GlobalAddress } from '../address';
import { DpmsError, isDpmsError } from '../errors';
import { CommitFlags, Decision, decisionWord, LANE, laneOffset, RECORD, RECORD_HEADER_BYTES, RecordOp, readU64 } from '../layout';
import { COMMIT_LINE, overlayStagedWrites, RecordBuilder, sealLog, type StagedWrite } from '../log';
import type { LaneSlot, RemoteNode, RemoteReservation } from './remote-node';
import { lockOffsets, lockTag, REGION } from './protocol';

/** What a transaction needs from its client. */
export interface ClusterContext {
  readonly clientId: number;
  nodeFor(address: GlobalAddress): Promise<RemoteNode>;
  placeAllocation(sizeBytes: number, preferred: number | undefined): Promise<RemoteNode>;
  /** The client lost a node mid-commit: end every session so the nodes settle what it left. */
  abandon(reason: string): void;
}

interface NodeEffects {
  readonly node: RemoteNode;
  readonly builder: RecordBuilder;
  readonly allocs: RemoteReservation[];
  readonly frees: Array<{ chunk: number; slot: number; huge: boolean }>;
  readonly transient: RemoteReservation[];
  readonly writes: StagedWrite[];
}

export type ClusterTxState = 'active' | 'committing' | 'committed' | 'aborted';

export class ClusterTransaction {
  private state: ClusterTxState = 'active';
  private readonly effects = new Map<number, NodeEffects>();
  /** Lock words held, per node. */
  private readonly held = new Map<number, { node: RemoteNode; words: Set<number> }>();
  private readonly tag: bigint;

  constructor(readonly serial: number, private readonly context: ClusterContext) {
    this.tag = lockTag(context.clientId, serial);
  }

  get status(): ClusterTxState { return this.state; }

  async read(address: GlobalAddress, length: number): Promise<Buffer> {
    this.checkActive();
    const node = await this.context.nodeFor(address);
    const offset = offsetOf(address);
    node.checkDataRange(offset, length, address);
    await this.lock(node, offset, length);
    const result = await node.connection.read(REGION.pool, offset, length);
    const effects = this.effects.get(node.nodeId);
    if (effects) overlayStagedWrites(result, offset, effects.builder.staging, effects.writes);
    return result;
  }

  async write(address: GlobalAddress, data: Uint8Array): Promise<void> {
    this.checkActive();
    const node = await this.context.nodeFor(address);
    const offset = offsetOf(address);
    node.checkDataRange(offset, data.length, address);
    await this.lock(node, offset, data.length);
    const effects = this.effectsOn(node);
    const staged = effects.builder.write(offset, data);
    effects.writes.push({ offset, length: data.length, staged });
  }

  async alloc(sizeBytes: number, nodeId?: number): Promise<GlobalAddress> {
    this.checkActive();
    const node = await this.context.placeAllocation(sizeBytes, nodeId);
    const effects = this.effectsOn(node);
    const reservation = await node.reserve(sizeBytes, effects.builder);
    effects.allocs.push(reservation);
    // No lock: nobody else can know the address before the transaction commits.
    return makeAddress(node.nodeId, reservation.offset);
  }

  async free(address: GlobalAddress): Promise<void> {
    this.checkActive();
    const node = await this.context.nodeFor(address);
    const offset = offsetOf(address);
    const effects = this.effectsOn(node);
    const own = effects.allocs.findIndex((reservation) => reservation.offset === offset);
    if (own >= 0) {
      const [reservation] = effects.allocs.splice(own, 1);
      effects.builder.clearBits32(node.bitmapWordOffset(reservation.chunk, reservation.slot), 1 << (reservation.slot & 31));
      effects.transient.push(reservation);
      return;
    }
    // Lock the object's first granule so that two frees of it are serialized, then check that it is live.
    const header = await node.lookup(offset);
    if (!header) throw new DpmsError('DPMS_INVALID_ADDRESS', `cannot free ${nodeOf(address)}:0x${offset.toString(16)}: it is not an allocated object`);
    await this.lock(node, offset, 1);
    if (effects.frees.some((entry) => entry.chunk === header.chunk && entry.slot === header.slot) || !(await node.lookup(offset))) {
      throw new DpmsError('DPMS_INVALID_ADDRESS', `object at ${nodeOf(address)}:0x${offset.toString(16)} is already freed`);
    }
    effects.builder.clearBits32(node.bitmapWordOffset(header.chunk, header.slot), 1 << (header.slot & 31));
    effects.frees.push({ chunk: header.chunk, slot: header.slot, huge: header.header.kind === 2 });
  }

  /** Make every write, allocation and free durable and visible on every node, atomically. */
  async commit(): Promise<void> {
    this.checkActive();
    this.state = 'committing';
    const participants = [...this.effects.values()].filter((effects) => !effects.builder.isEmpty).sort((a, b) => a.node.nodeId - b.node.nodeId);
    const lanes: LaneSlot[] = [];
    let decided = false;
    let writing = false;
    try {
      for (const effects of participants) lanes.push(await effects.node.acquireLane());
      writing = true;
      if (participants.length === 1) {
        await this.commitOne(participants[0], lanes[0], () => { decided = true; });
      } else if (participants.length > 1) {
        await this.commitMany(participants, lanes, () => { decided = true; });
      }
      this.state = 'committed';
    } catch (error) {
      if (decided) {
        // Durable and decided: the nodes finish applying it once the client's sessions end.
        this.state = 'committed';
        this.context.abandon(`commit of transaction ${this.serial} could not finish: ${(error as Error).message}`);
      } else {
        this.state = 'aborted';
        // Logs may be on some nodes: let the nodes settle them (abort) as for a crashed client.
        if (writing && !isDpmsError(error, 'DPMS_TX_ABORTED')) this.context.abandon(`commit failed: ${(error as Error).message}`);
        this.settleAllocations(false);
        await this.unlockAll();
        throw error;
      }
    } finally {
      participants.forEach((effects, i) => { if (lanes[i]) effects.node.releaseLane(lanes[i]); });
    }
    this.settleAllocations(true);
    await this.unlockAll();
  }

  /** Discard everything the transaction did. Idempotent. */
  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    this.checkActive();
    this.state = 'aborted';
    this.settleAllocations(false);
    await this.unlockAll();
  }

  // ---- commit protocols ----

  private async commitOne(effects: NodeEffects, lane: LaneSlot, onDecided: () => void): Promise<void> {
    const { node, builder } = effects;
    const generation = lane.generation + 1;
    sealLog(builder.staging, builder.recordCount, builder.recordsBytes, generation, 0);
    const base = laneOffset(node.layout, lane.lane);
    try {
      await node.connection.writePersist(REGION.pool, base + LANE.commit, builder.staging.subarray(0, COMMIT_LINE + builder.recordsBytes));
    } catch (error) {
      // The log may or may not have reached the node's PM: the node's recovery decides.
      throw new DpmsError('DPMS_TX_UNKNOWN', `transaction ${this.serial}: the outcome is unknown (the commit record may be durable): ${(error as Error).message}`, { cause: error });
    }
    lane.generation = generation;
    onDecided();
    await faultPoint('logged');
    await this.apply(effects);
    await node.connection.writePersist(REGION.pool, base + LANE.appliedGeneration, u64(generation));
  }

  private async commitMany(participants: NodeEffects[], lanes: LaneSlot[], onDecided: () => void): Promise<void> {
    const coordinator = participants[0];
    const coordinatorLane = lanes[0];
    const coordinatorGeneration = coordinatorLane.generation + 1;
    coordinator.builder.participants(participants.map((effects) => effects.node.nodeId));
    // 1. prepare: every participant's log, written and persisted in parallel.
    await Promise.all(participants.map((effects, i) => {
      const generation = lanes[i].generation + 1;
      sealLog(effects.builder.staging, effects.builder.recordCount, effects.builder.recordsBytes, generation, 0, {
        flags: CommitFlags.prepared | (i === 0 ? CommitFlags.coordinator : 0),
        coordinatorNode: coordinator.node.nodeId, coordinatorLane: coordinatorLane.lane, coordinatorGeneration, clientId: this.context.clientId,
      });
      return effects.node.connection.writePersist(REGION.pool, laneOffset(effects.node.layout, lanes[i].lane) + LANE.commit,
        effects.builder.staging.subarray(0, COMMIT_LINE + effects.builder.recordsBytes));
    }));
    participants.forEach((_, i) => { lanes[i].generation += 1; });
    await faultPoint('prepared');
    // 2. the commit point: one CAS on the coordinator's decision word, then persisted.
    const lost = participants.find((effects) => !effects.node.connection.isOpen);
    if (lost) {
      // Nothing decided yet, and the client's sessions are ending: the nodes abort it.
      this.context.abandon(`lost node ${lost.node.nodeId} before the commit point`);
      throw new DpmsError('DPMS_TX_ABORTED', `transaction ${this.serial} was aborted: node ${lost.node.nodeId} was lost before the commit point`);
    }
    const decisionAt = laneOffset(coordinator.node.layout, coordinatorLane.lane) + LANE.decision;
    const committedWord = decisionWord(coordinatorGeneration, Decision.Committed);
    let found: bigint;
    try {
      found = await coordinator.node.connection.compareAndSwap(REGION.pool, decisionAt, coordinatorLane.decision, committedWord);
      if (found === coordinatorLane.decision) await coordinator.node.connection.persist(REGION.pool, decisionAt, 8);
    } catch (error) {
      throw new DpmsError('DPMS_TX_UNKNOWN', `transaction ${this.serial}: the outcome is unknown (lost the coordinator at the commit point): ${(error as Error).message}`, { cause: error });
    }
    if (found !== coordinatorLane.decision) {
      coordinatorLane.decision = found;
      this.context.abandon(`transaction ${this.serial} was aborted by a resolver`);
      throw new DpmsError('DPMS_TX_ABORTED', `transaction ${this.serial} was aborted: a participant restarted and its coordinator decided to abort`);
    }
    coordinatorLane.decision = committedWord;
    onDecided();
    await faultPoint('decided');
    // 3. apply everywhere, void the participants, then the coordinator (confirmed at once).
    await Promise.all(participants.map((effects) => this.apply(effects)));
    await faultPoint('applied');
    await Promise.all(participants.slice(1).map((effects, i) =>
      effects.node.connection.writePersist(REGION.pool, laneOffset(effects.node.layout, lanes[i + 1].lane) + LANE.appliedGeneration, u64(lanes[i + 1].generation))));
    const head = Buffer.alloc(24);
    head.writeBigUInt64LE(BigInt(coordinatorGeneration), LANE.appliedGeneration);
    head.writeBigUInt64LE(committedWord, LANE.decision);
    head.writeBigUInt64LE(BigInt(coordinatorGeneration), LANE.confirmedGeneration);
    await coordinator.node.connection.writePersist(REGION.pool, laneOffset(coordinator.node.layout, coordinatorLane.lane), head);
  }

  /** Apply a node's records with one-sided operations and persist them. */
  private async apply(effects: NodeEffects): Promise<void> {
    const { node, builder } = effects;
    const image = builder.staging;
    const pending: Array<Promise<unknown>> = [];
    let at = COMMIT_LINE;
    for (let i = 0; i < builder.recordCount; i++) {
      const op = image.readUInt32LE(at + RECORD.op);
      const length = image.readUInt32LE(at + RECORD.length);
      const offset = readU64(image, at + RECORD.offset);
      const data = at + RECORD_HEADER_BYTES;
      if (op === RecordOp.Write) {
        pending.push(node.connection.writePersist(REGION.pool, offset, image.subarray(data, data + length)));
      } else if (op !== RecordOp.Participants) {
        pending.push(applyBitsRemote(node, offset, image.readUInt32LE(data), op === RecordOp.SetBits32));
      }
      at = data + ((length + 7) & ~7);
    }
    await Promise.all(pending);
  }

  // ---- locks ----

  private async lock(node: RemoteNode, offset: number, length: number): Promise<void> {
    let held = this.held.get(node.nodeId);
    if (!held) {
      held = { node, words: new Set() };
      this.held.set(node.nodeId, held);
    }
    const wanted = lockOffsets(offset, length).filter((word) => !held!.words.has(word));
    if (wanted.length === 0) return;
    const results = await Promise.all(wanted.map((word) => node.connection.compareAndSwap(REGION.locks, word, 0n, this.tag)));
    let conflict = false;
    results.forEach((found, i) => {
      if (found === 0n || found === this.tag) held!.words.add(wanted[i]);
      else conflict = true;
    });
    if (conflict) throw new DpmsError('DPMS_TX_CONFLICT', `transaction ${this.serial}: data on node ${node.nodeId} is locked by another transaction`);
  }

  private async unlockAll(): Promise<void> {
    const releases: Array<Promise<unknown>> = [];
    for (const { node, words } of this.held.values()) {
      if (!node.connection.isOpen) continue;
      for (const word of words) releases.push(node.connection.compareAndSwap(REGION.locks, word, this.tag, 0n).catch(() => undefined));
    }
    this.held.clear();
    await Promise.all(releases);
  }

  private settleAllocations(committed: boolean): void {
    for (const effects of this.effects.values()) {
      effects.node.settleReservations(effects.allocs, committed);
      effects.node.settleReservations(effects.transient, false);
      if (committed) for (const freed of effects.frees) effects.node.noteFreed(freed.chunk, freed.slot);
      // Huge runs left empty go back to the node (best effort: the node also releases empty runs when it opens).
      const empty = [...(committed ? effects.frees.filter((entry) => entry.huge) : []), ...effects.transient.filter((r) => r.huge),
        ...(committed ? [] : effects.allocs.filter((r) => r.huge))];
      for (const run of empty) effects.node.call({ op: 'releaseChunk', chunk: run.chunk }).catch(() => undefined);
    }
  }

  private effectsOn(node: RemoteNode): NodeEffects {
    let effects = this.effects.get(node.nodeId);
    if (!effects) {
      effects = { node, builder: new RecordBuilder(node.layout.laneBytes - LANE.records), allocs: [], frees: [], transient: [], writes: [] };
      this.effects.set(node.nodeId, effects);
    }
    return effects;
  }

  private checkActive(): void {
    if (this.state !== 'active') throw new DpmsError('DPMS_TX_STATE', `transaction ${this.serial} is ${this.state}; start a new one`);
  }
}

/**
 * Fault injection for the kill tests: when DPMS_CRASH_POINT names this point, the process kills
 * itself with SIGKILL right here (no cleanup runs, as in a real crash); when DPMS_PAUSE_POINT names
 * it, the commit stops here until the process gets SIGUSR2 (so a test can kill a node meanwhile).
 */
async function faultPoint(name: string): Promise<void> {
  if (process.env.DPMS_CRASH_POINT === name) process.kill(process.pid, 'SIGKILL');
  if (process.env.DPMS_PAUSE_POINT === name) {
    process.stderr.write(`dpms: paused at ${name}\n`);
    // A signal listener does not keep the event loop alive; the timer does.
    const keepAlive = setInterval(() => {}, 1000);
    await new Promise((resolve) => process.once('SIGUSR2', resolve));
    clearInterval(keepAlive);
  }
}

function u64(value: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(BigInt(value));
  return bytes;
}

/** Set or clear bits of a remote u32 with a CAS loop on its 8-byte word, then persist the word. */
async function applyBitsRemote(node: RemoteNode, offset: number, mask: number, set: boolean): Promise<void> {
  const wordAt = offset - (offset & 7);
  const shifted = BigInt(mask >>> 0) << ((offset & 4) !== 0 ? 32n : 0n);
  let current = (await node.connection.read(REGION.pool, wordAt, 8)).readBigUInt64LE(0);
  for (;;) {
    const next = set ? current | shifted : current & ~shifted & 0xffff_ffff_ffff_ffffn;
    if (next === current) break;
    const found = await node.connection.compareAndSwap(REGION.pool, wordAt, current, next);
    if (found === current) break;
    current = found;
  }
  await node.connection.persist(REGION.pool, wordAt, 8);
}
