// Proves that a process killed with SIGKILL at random moments while running transactions on a real
// pool file (tmpfs, libpmem) loses nothing it acknowledged and leaves nothing half done: after each
// kill, recovery at open and the verifier pass, money is conserved, the commit counter is at least
// the last acknowledged value, and the allocator holds exactly the objects the root area reaches.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { checkPoolFile, formatPoolFile, NULL_ADDRESS, Pdsm, readAddress, writeAddress, type GlobalAddress } from '../../pdsm';
import { ACCOUNTS, ACCOUNTS_AT, CHURN_AT, CHURN_SLOTS, ROOT_MAGIC } from '../support/kill-child';
import { Random, testSeed } from '../support/random';

const KILLS = 30;
const CHILD = path.join(__dirname, '..', 'support', 'kill-child.js');

async function initialise(poolPath: string): Promise<void> {
  formatPoolFile(poolPath, { sizeBytes: 32 * 1024 * 1024, nodeId: 0, chunkBytes: 64 * 1024, laneBytes: 64 * 1024 });
  const dsm = await Pdsm.open({ nodes: [{ path: poolPath, nodeId: 0 }] });
  await dsm.transaction(async (tx) => {
    const header = Buffer.alloc(CHURN_AT + CHURN_SLOTS * 8);
    header.writeUInt32LE(ROOT_MAGIC, 0);
    const counter = await tx.alloc(8);
    await tx.write(counter, Buffer.alloc(8));
    writeAddress(header, 8, counter);
    for (let i = 0; i < ACCOUNTS; i++) {
      const account = await tx.alloc(8);
      const balance = Buffer.alloc(8);
      balance.writeBigInt64LE(1000n);
      await tx.write(account, balance);
      writeAddress(header, ACCOUNTS_AT + i * 8, account);
    }
    await tx.write(dsm.root(0), header);
  });
  await dsm.close();
}

/** Run the child for `runMs`, SIGKILL it, and return the last count it acknowledged. */
function runAndKill(poolPath: string, seed: number, runMs: number): Promise<bigint> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, poolPath, String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let acknowledged = -1n;
    let pending = '';
    let errors = '';
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) {
        const match = /^committed (\d+)$/.exec(line);
        if (match) acknowledged = BigInt(match[1]);
      }
    });
    child.stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), runMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`child exited on its own (code ${code}): ${errors}`));
      else resolve(acknowledged);
    });
  });
}

test('kill -9 during transactions loses nothing acknowledged', async () => {
  const seed = testSeed('kill');
  const random = new Random(seed);
  const poolPath = path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : '/tmp', `dpms-kill-${process.pid}.pool`);
  try {
    await initialise(poolPath);
    let lastCount = 0n;
    let totalAcknowledged = 0;
    for (let kill = 0; kill < KILLS; kill++) {
      const acknowledged = await runAndKill(poolPath, seed + kill, 150 + random.int(400));
      const check = checkPoolFile(poolPath, 0);
      assert.ok(check.clean, `kill ${kill}: verifier: ${check.errors.join('; ')}`);
      const dsm = await Pdsm.open({ nodes: [{ path: poolPath, nodeId: 0 }] });
      try {
        const header = await dsm.read(dsm.root(0), CHURN_AT + CHURN_SLOTS * 8);
        const count = (await dsm.read(readAddress(header, 8), 8)).readBigUInt64LE(0);
        assert.ok(count >= acknowledged, `kill ${kill}: counter ${count} is below the acknowledged ${acknowledged}`);
        assert.ok(count <= acknowledged + 1n || acknowledged < 0n, `kill ${kill}: counter ${count} ran ahead of ${acknowledged} + 1`);
        assert.ok(count >= lastCount, `kill ${kill}: counter went back from ${lastCount} to ${count}`);
        if (acknowledged >= 0n) totalAcknowledged++;
        lastCount = count;
        let sum = 0n;
        for (let i = 0; i < ACCOUNTS; i++) {
          sum += (await dsm.read(readAddress(header, ACCOUNTS_AT + i * 8), 8)).readBigInt64LE(0);
        }
        assert.equal(sum, 1000n * BigInt(ACCOUNTS), `kill ${kill}: money not conserved`);
        const reachable = new Set<number>([readAddress(header, 8)]);
        for (let i = 0; i < ACCOUNTS; i++) reachable.add(readAddress(header, ACCOUNTS_AT + i * 8));
        for (let i = 0; i < CHURN_SLOTS; i++) {
          const churn: GlobalAddress = readAddress(header, CHURN_AT + i * 8);
          if (churn !== NULL_ADDRESS) {
            reachable.add(churn);
            assert.ok(dsm.objectSize(churn) !== undefined, `kill ${kill}: churn object ${churn} is not allocated`);
          }
        }
        assert.equal(check.objects, reachable.size, `kill ${kill}: allocator holds ${check.objects} objects, root reaches ${reachable.size}`);
      } finally {
        await dsm.close();
      }
    }
    console.log(`# kill -9: ${KILLS} kills, final counter ${lastCount}, ${totalAcknowledged} runs acknowledged commits`);
    assert.ok(lastCount > 0n, 'the child never committed anything');
  } finally {
    fs.rmSync(poolPath, { force: true });
  }
});
