// `dpms demo`: the README's first command for now. It formats a pool (on tmpfs when there is one),
// opens pDSM on it and shows, step by step, what transactions promise: a transfer between two
// accounts commits atomically, an aborted one leaves no trace, a crash in the middle of a commit
// is recovered all-or-nothing, and the allocator verifier stays clean. Run it twice: the second run
// finds the first run's balances in the pool.

import fs from 'node:fs';
import path from 'node:path';
import type { Argv } from 'yargs';
import {
  checkPoolFile, createSimPm, formatAddress, formatPoolFile, InstrumentedPm, Pdsm, readAddress, ROOT_BYTES,
  verifyPool, writeAddress, type GlobalAddress, type Transaction,
} from '../../pdsm';
import { formatBytes, parseSize } from '../../pdsm';
import { EXIT, run } from './run';

const ROOT_MAGIC = 0x4f4d4544; // "DEMO"

function defaultPool(): string {
  const base = fs.existsSync('/dev/shm') ? '/dev/shm' : path.resolve('.dpms');
  return path.join(base, 'dpms-demo.pool');
}

export function registerDemoCommand(yargs: Argv): Argv {
  return yargs.command('demo', 'format a pool and show transactions, abort, crash and recovery', (y) => y
    .option('pool', { type: 'string', describe: 'pool file (default: /dev/shm/dpms-demo.pool, or ./.dpms/)' })
    .option('size', { type: 'string', default: '64M', describe: 'pool size when formatting' })
    .option('reformat', { type: 'boolean', default: false, describe: 'format again even if the pool exists' }),
  (argv) => run(() => demo(argv.pool ?? defaultPool(), parseSize(argv.size, '--size'), argv.reformat)));
}

async function readBalance(tx: Transaction, account: GlobalAddress): Promise<bigint> {
  return (await tx.read(account, 8)).readBigInt64LE(0);
}

async function writeBalance(tx: Transaction, account: GlobalAddress, balance: bigint): Promise<void> {
  const bytes = Buffer.alloc(8);
  bytes.writeBigInt64LE(balance);
  await tx.write(account, bytes);
}

async function transfer(tx: Transaction, from: GlobalAddress, to: GlobalAddress, amount: bigint): Promise<void> {
  await writeBalance(tx, from, (await readBalance(tx, from)) - amount);
  await writeBalance(tx, to, (await readBalance(tx, to)) + amount);
}

async function demo(poolPath: string, sizeBytes: number, reformat: boolean): Promise<number> {
  const step = (text: string): void => console.log(`\n== ${text}`);
  fs.mkdirSync(path.dirname(poolPath), { recursive: true });
  if (reformat || !fs.existsSync(poolPath)) {
    step(`format ${poolPath}`);
    const info = formatPoolFile(poolPath, { sizeBytes, nodeId: 0, force: reformat, chunkBytes: 64 * 1024, laneBytes: 64 * 1024 });
    console.log(`pool of ${formatBytes(info.layout.poolBytes)}: ${info.layout.chunkCount} chunks of ${formatBytes(info.layout.chunkBytes)}, ` +
      `${info.layout.laneCount} log lanes, persistence by ${info.flushMode === 'cpu' ? 'CPU cache flush + fence (libpmem)' : 'msync'}`);
  } else {
    step(`open the existing pool ${poolPath} (run with --reformat to start over)`);
  }

  const dsm = await Pdsm.open({ nodes: [{ path: poolPath, nodeId: 0 }] });
  const node = dsm.node(0);
  console.log(`recovery at open: ${node.recovery.replayed} committed transaction(s) replayed, ${node.recovery.discarded} torn log(s) discarded`);
  const root = dsm.root(0);
  let accounts: [GlobalAddress, GlobalAddress];
  const rootBytes = await dsm.read(root, 24);
  if (rootBytes.readUInt32LE(0) === ROOT_MAGIC) {
    accounts = [readAddress(rootBytes, 8), readAddress(rootBytes, 16)];
    step('accounts found from an earlier run');
  } else {
    step('create two accounts with 1000 each, in one transaction');
    accounts = await dsm.transaction(async (tx) => {
      const alice = await tx.alloc(64);
      const bob = await tx.alloc(64);
      await writeBalance(tx, alice, 1000n);
      await writeBalance(tx, bob, 1000n);
      const record = Buffer.alloc(24);
      record.writeUInt32LE(ROOT_MAGIC, 0);
      writeAddress(record, 8, alice);
      writeAddress(record, 16, bob);
      await tx.write(root, record);
      return [alice, bob] as [GlobalAddress, GlobalAddress];
    });
  }
  const [alice, bob] = accounts;
  const show = async (label: string): Promise<void> => {
    const [a, b] = await dsm.transaction(async (tx) => [await readBalance(tx, alice), await readBalance(tx, bob)]);
    console.log(`${label.padEnd(34)} alice ${String(a).padStart(6)} @${formatAddress(alice)}   bob ${String(b).padStart(6)} @${formatAddress(bob)}   total ${a + b}`);
  };
  await show('balances');

  step('transfer 100 from alice to bob (committed: durable when commit returns)');
  await dsm.transaction((tx) => transfer(tx, alice, bob, 100n));
  await show('after the transfer');

  step('transfer 500 from bob to alice, then abort');
  const aborted = dsm.begin();
  await transfer(aborted, bob, alice, 500n);
  await aborted.abort();
  await show('after the abort (nothing changed)');

  step('crash in the middle of a commit, at every persist point, and recover each time');
  // A private copy of the pool runs in the crash simulator; the real pool is not touched.
  const image = Buffer.from(node.pm.buffer);
  let points = 0;
  let wholly = 0;
  let none = 0;
  for (let crashAt = 1; ; crashAt++) {
    const sim = createSimPm(image);
    let seen = 0;
    const pm = new InstrumentedPm(sim, () => {
      if (++seen === crashAt) {
        sim.crash(crashAt);
        throw new Error('simulated power failure');
      }
    });
    const copy = await Pdsm.open({ nodes: [{ pm, nodeId: 0 }] });
    seen = 0;
    let crashed = false;
    try {
      await copy.transaction((tx) => transfer(tx, alice, bob, 1n));
    } catch {
      crashed = true;
    }
    const crashedImage = sim.persistentImage();
    await copy.close();
    if (!crashed) break;
    points++;
    const recovered = await Pdsm.open({ nodes: [{ pm: createSimPm(crashedImage), nodeId: 0 }] });
    const [a, b] = await recovered.transaction(async (tx) => [await readBalance(tx, alice), await readBalance(tx, bob)]);
    const [a0, b0] = await dsm.transaction(async (tx) => [await readBalance(tx, alice), await readBalance(tx, bob)]);
    const report = verifyPool(recovered.node(0).pm.buffer, recovered.node(0).info);
    if (a === a0 && b === b0) none++;
    else if (a === a0 - 1n && b === b0 + 1n) wholly++;
    else throw new Error(`torn transaction after a crash: alice ${a}, bob ${b}`);
    if (!report.clean) throw new Error(`allocator not clean after recovery: ${report.errors.join('; ')}`);
    await recovered.close();
  }
  console.log(`${points} crash points: ${wholly} recovered with the transfer wholly applied, ${none} with no trace of it, 0 torn; verifier clean`);

  await dsm.close();
  step(`dpms check ${poolPath}`);
  const check = checkPoolFile(poolPath);
  console.log(`${check.clean ? 'clean' : 'NOT clean'}: ${check.objects} objects in ${check.chunksUsed} chunks; root area ${ROOT_BYTES} B`);
  console.log(`\nRun 'dpms demo' again: the balances are read back from the pool. Inspect it with 'dpms inspect ${poolPath}'.`);
  return check.clean ? EXIT.ok : EXIT.problems;
}
