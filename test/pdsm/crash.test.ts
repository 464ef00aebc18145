// Proves that pDSM transactions are all-or-nothing across power failures: seeded random workloads of
// transactions (alloc, write, free over many objects, small and huge) run on the crash simulator;
// crash images are taken at every persist point (flush and drain) of the first commits and at
// random persist points afterwards, plus crashes during recovery itself and in-place crashes that
// the workload continues from. After each, recovery must produce exactly the state before or after
// the transaction in flight, with the allocator verifier clean (no leak, no double allocation).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  createSimPm, decodeSuperblock, inspectLane, InstrumentedPm, offsetOf, Pdsm, PoolNode, verifyPool, type GlobalAddress, type SimMapping,
} from '../../pdsm';
import { Random, testSeed } from '../support/random';

const POOL_BYTES = 2 * 1024 * 1024;
const FORMAT = { nodeId: 0, chunkBytes: 16 * 1024, laneCount: 4, laneBytes: 32 * 1024 };
/** Crash points the whole file must reach (the issue asks for at least 1000 per npm test). */
const MIN_CRASH_POINTS = 1500;

type Model = ReadonlyMap<number, Buffer>;

class SimulatedCrash extends Error {}

interface Outcome {
  /** Which acceptable model matched, or -1. */
  readonly matched: number;
  readonly detail: string;
}

/** Recover `image` on a private copy and compare it with each acceptable model. */
function recoverAndCompare(image: Buffer, acceptable: readonly Model[]): Outcome {
  const copy = createSimPm(image);
  try {
    const node = PoolNode.open(copy, { nodeId: 0 });
    const live = new Map<number, number>();
    const report = verifyPool(copy.buffer, node.info, (object) => live.set(object.address, object.sizeBytes));
    if (!report.clean) {
      const lanes = [];
      const info = decodeSuperblock(image, { availableBytes: image.length });
      for (let lane = 0; lane < info.layout.laneCount; lane++) {
        const state = inspectLane(image, info.layout, lane);
        lanes.push(`${lane}:${state.state}/g${state.generation}/a${state.appliedGeneration}/s${state.sequence}/n${state.recordCount}`);
      }
      return { matched: -1, detail: `verifier: ${report.errors.join('; ')} (lanes before recovery ${lanes.join(' ')})` };
    }
    if (report.pendingLogs !== 0 || report.tornLogs !== 0) return { matched: -1, detail: 'logs left after recovery' };
    const mismatches: string[] = [];
    for (let m = 0; m < acceptable.length; m++) {
      const model = acceptable[m];
      let why = '';
      if (live.size !== model.size) why = `${live.size} live objects, model has ${model.size}`;
      for (const [address, content] of model) {
        if (why) break;
        const size = live.get(address);
        if (size === undefined) why = `object ${address} missing`;
        else if (size < content.length) why = `object ${address} too small`;
        else {
          const offset = offsetOf(address as GlobalAddress);
          if (!copy.buffer.subarray(offset, offset + content.length).equals(content)) why = `object ${address} content differs`;
        }
      }
      if (!why) return { matched: m, detail: '' };
      mismatches.push(`model ${m}: ${why}`);
    }
    return { matched: -1, detail: mismatches.join('; ') };
  } finally {
    copy.close();
  }
}

class CrashHarness {
  crashPoints = 0;
  recoveryCrashPoints = 0;
  inPlaceCrashes = 0;
  transactions = 0;
  private sim: SimMapping;
  private dsm!: Pdsm;
  private model: Map<number, Buffer> = new Map();
  /** States a crash right now may recover to. */
  private acceptable: Model[] = [this.model];
  private snapshotEvery = true;
  private crashInPlaceAt = 0;
  private persistPoints = 0;

  constructor(private readonly random: Random, private readonly label: string) {
    this.sim = createSimPm(POOL_BYTES);
    PoolNode.format(this.sim, FORMAT);
  }

  async open(): Promise<void> {
    const pm = new InstrumentedPm(this.sim, () => this.onPersistPoint());
    this.dsm = await Pdsm.open({ nodes: [{ pm, nodeId: 0 }], lockTimeoutMs: 1000 });
  }

  private fail(detail: string): never {
    assert.fail(`${this.label}: crash point ${this.crashPoints} after ${this.transactions} transactions: ${detail}`);
  }

  private onPersistPoint(): void {
    this.persistPoints++;
    if (this.snapshotEvery || this.random.chance(0.2)) this.checkCrashImage();
    if (this.crashInPlaceAt !== 0 && this.persistPoints === this.crashInPlaceAt) {
      this.crashInPlaceAt = 0;
      this.sim.crash(this.random.int(2 ** 31));
      throw new SimulatedCrash('simulated power failure');
    }
  }

  private checkCrashImage(): void {
    this.crashPoints++;
    const seed = this.random.int(2 ** 31);
    const image = this.sim.crashImage(seed);
    const outcome = recoverAndCompare(image, this.acceptable);
    if (outcome.matched < 0) this.fail(`image seed ${seed}: ${outcome.detail}`);
    // Every fourth image: crash again in the middle of its recovery, then recover that.
    if (this.crashPoints % 4 === 0) this.crashDuringRecovery(image);
  }

  private crashDuringRecovery(image: Buffer): void {
    const sim = createSimPm(image);
    const stopAt = 1 + this.random.int(6);
    let seen = 0;
    const pm = new InstrumentedPm(sim, () => {
      if (++seen === stopAt) {
        sim.crash(this.random.int(2 ** 31));
        throw new SimulatedCrash('power failure during recovery');
      }
    });
    try {
      PoolNode.open(pm, { nodeId: 0 });
    } catch (error) {
      if (!(error instanceof SimulatedCrash)) throw error;
      this.recoveryCrashPoints++;
      const outcome = recoverAndCompare(sim.persistentImage(), this.acceptable);
      if (outcome.matched < 0) this.fail(`crash during recovery at point ${stopAt}: ${outcome.detail}`);
    } finally {
      sim.close();
    }
  }

  /** One random transaction; returns after commit or abort (or a simulated crash, recovered). */
  async step(): Promise<void> {
    const random = this.random;
    const before: Model = new Map(this.model);
    const after = new Map(this.model);
    this.acceptable = [before];
    if (random.chance(0.03)) this.crashInPlaceAt = this.persistPoints + 1 + random.int(12);
    const tx = this.dsm.begin();
    try {
      const ops = 1 + random.int(4);
      for (let i = 0; i < ops; i++) {
        const addresses = [...after.keys()];
        const choice = random.next();
        if (addresses.length < 8 || (choice < 0.4 && addresses.length < 80)) {
          const size = random.chance(0.08) ? 4097 + random.int(40_000) : 1 + random.int(4096);
          const address = await tx.alloc(size);
          const content = random.bytes(Math.min(size, 1 + random.int(300)));
          await tx.write(address, content);
          after.set(address, content);
        } else if (choice < 0.75) {
          const address = random.pick(addresses);
          const content = Buffer.from(after.get(address)!);
          const start = random.int(content.length);
          random.bytes(1 + random.int(content.length - start)).copy(content, start);
          await tx.write((address + start) as GlobalAddress, content.subarray(start));
          after.set(address, content);
        } else {
          const address = random.pick(addresses);
          await tx.free(address as GlobalAddress);
          after.delete(address);
        }
      }
      if (random.chance(0.1)) {
        await tx.abort();
      } else {
        this.acceptable = [before, after];
        await tx.commit();
        this.model = after;
      }
      this.acceptable = [this.model];
      this.transactions++;
    } catch (error) {
      if (!(error instanceof SimulatedCrash)) throw error;
      await this.recoverInPlace();
    }
  }

  /** The simulator crashed in place: reopen on what survived and continue from the state it holds. */
  private async recoverInPlace(): Promise<void> {
    this.inPlaceCrashes++;
    const outcome = recoverAndCompare(this.sim.persistentImage(), this.acceptable);
    if (outcome.matched < 0) this.fail(`in-place crash: ${outcome.detail}`);
    this.model = new Map(this.acceptable[outcome.matched]);
    this.acceptable = [this.model];
    this.crashInPlaceAt = 0;
    await this.open();
  }

  async run(minCrashPoints: number, exhaustiveTransactions: number): Promise<void> {
    await this.open();
    while (this.transactions < exhaustiveTransactions) await this.step();
    this.snapshotEvery = false;
    while (this.crashPoints < minCrashPoints) await this.step();
    this.sim.close();
  }
}

test('transactions survive crashes at every persist point', async () => {
  const seed = testSeed('crash');
  let total = 0;
  let recoveryCrashes = 0;
  let inPlace = 0;
  let transactions = 0;
  for (let round = 0; round < 3; round++) {
    const harness = new CrashHarness(new Random(seed + round), `seed ${seed} round ${round}`);
    await harness.run(MIN_CRASH_POINTS / 3, 25);
    total += harness.crashPoints;
    recoveryCrashes += harness.recoveryCrashPoints;
    inPlace += harness.inPlaceCrashes;
    transactions += harness.transactions;
  }
  console.log(`# crash points: ${total} crash images recovered and compared, ${recoveryCrashes} crashes during recovery, ` +
    `${inPlace} in-place crashes continued from, over ${transactions} transactions`);
  assert.ok(total >= MIN_CRASH_POINTS, `only ${total} crash points ran`);
  assert.ok(recoveryCrashes > 0, 'no crash during recovery was exercised');
});
