// The victim of the kill -9 test: opens a real pool file and runs transactions until it is killed.
// Root area layout (node 0): magic u32 at 0; counter object address at 8; 16 account addresses at
// 16..143; 8 churn slots at 144..207 (an address or 0). Every transaction moves money between two
// accounts (the sum stays 16000), bumps the counter, and sometimes allocates or frees a churn
// object. After each commit it prints "committed N" so the parent knows what must survive.

import { NULL_ADDRESS, Pdsm, readAddress, writeAddress, type GlobalAddress } from '../../pdsm';
import { Random } from './random';

export const ACCOUNTS = 16;
export const CHURN_SLOTS = 8;
export const ROOT_MAGIC = 0x4c4c494b; // "KILL"
export const ACCOUNTS_AT = 16;
export const CHURN_AT = ACCOUNTS_AT + ACCOUNTS * 8;

async function main(): Promise<void> {
  const [poolPath, seedText] = process.argv.slice(2);
  const random = new Random(Number(seedText));
  const dsm = await Pdsm.open({ nodes: [{ path: poolPath, nodeId: 0 }] });
  const root = dsm.root(0);
  const header = await dsm.read(root, CHURN_AT + CHURN_SLOTS * 8);
  if (header.readUInt32LE(0) !== ROOT_MAGIC) throw new Error('pool not initialised');
  const counter = readAddress(header, 8);
  const accounts: GlobalAddress[] = [];
  for (let i = 0; i < ACCOUNTS; i++) accounts.push(readAddress(header, ACCOUNTS_AT + i * 8));
  for (;;) {
    const value = await dsm.transaction(async (tx) => {
      const from = accounts[random.int(ACCOUNTS)];
      const to = accounts[random.int(ACCOUNTS)];
      const amount = BigInt(random.int(50));
      const a = (await tx.read(from, 8)).readBigInt64LE(0);
      const fromBytes = Buffer.alloc(8);
      fromBytes.writeBigInt64LE(a - amount);
      await tx.write(from, fromBytes);
      const b = (await tx.read(to, 8)).readBigInt64LE(0);
      const toBytes = Buffer.alloc(8);
      toBytes.writeBigInt64LE(b + amount);
      await tx.write(to, toBytes);
      const count = (await tx.read(counter, 8)).readBigUInt64LE(0) + 1n;
      const countBytes = Buffer.alloc(8);
      countBytes.writeBigUInt64LE(count);
      await tx.write(counter, countBytes);
      if (random.chance(0.5)) {
        const slot = (root + CHURN_AT + random.int(CHURN_SLOTS) * 8) as GlobalAddress;
        const current = readAddress(await tx.read(slot, 8), 0);
        const next = Buffer.alloc(8);
        if (current === NULL_ADDRESS) {
          const size = random.chance(0.2) ? 100_000 + random.int(300_000) : 1 + random.int(8000);
          const object = await tx.alloc(size);
          await tx.write(object, random.bytes(Math.min(size, 512)));
          writeAddress(next, 0, object);
        } else {
          await tx.free(current);
        }
        await tx.write(slot, next);
      }
      return count;
    });
    process.stdout.write(`committed ${value}\n`);
  }
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
