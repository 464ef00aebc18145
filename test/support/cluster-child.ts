// A cluster client in its own process, for tests that kill clients: `hold <address>` locks an
// object in a transaction, prints "holding" and waits to be killed; `transfer` runs the kill test's
// workload (see test/cluster/kill.test.ts).

import { ClusterClient, isDpmsError, loadClusterConfig, type GlobalAddress } from '../../pdsm';

async function main(): Promise<void> {
  const [configPath, mode, ...rest] = process.argv.slice(2);
  const config = loadClusterConfig(configPath);
  const client = await ClusterClient.connect({ config });
  if (mode === 'hold') {
    const tx = client.begin();
    await tx.write(Number(rest[0]) as GlobalAddress, Buffer.from('held'));
    process.stdout.write('holding\n');
    setInterval(() => {}, 1000);
    return;
  }
  if (mode === 'once') {
    // One transfer of 1 from the first account to each of the others, in one transaction (the
    // parent sets DPMS_CRASH_POINT to die inside its commit).
    const [from, ...to] = rest.map((value) => Number(value) as GlobalAddress);
    await client.transaction(async (tx) => {
      const bytes = Buffer.alloc(8);
      bytes.writeBigUInt64LE((await tx.read(from, 8)).readBigUInt64LE(0) - BigInt(to.length));
      await tx.write(from, bytes);
      for (const address of to) {
        const other = Buffer.alloc(8);
        other.writeBigUInt64LE((await tx.read(address, 8)).readBigUInt64LE(0) + 1n);
        await tx.write(address, other);
      }
    });
    process.stdout.write('committed\n');
    await client.close();
    return;
  }
  if (mode === 'transfer') {
    // Accounts: u64 balances at the given addresses (spread over the nodes). Each transfer moves a
    // random amount between two random accounts in one (usually distributed) transaction; prints
    // "ok N" after each acknowledged commit.
    const accounts = rest.map((value) => Number(value) as GlobalAddress);
    let done = 0;
    for (;;) {
      const from = accounts[Math.floor(Math.random() * accounts.length)];
      let to = accounts[Math.floor(Math.random() * accounts.length)];
      if (to === from) to = accounts[(accounts.indexOf(from) + 1) % accounts.length];
      const amount = BigInt(1 + Math.floor(Math.random() * 10));
      try {
        await client.transaction(async (tx) => {
          const a = (await tx.read(from, 8)).readBigUInt64LE(0);
          const b = (await tx.read(to, 8)).readBigUInt64LE(0);
          if (a < amount) return;
          const bytes = Buffer.alloc(8);
          bytes.writeBigUInt64LE(a - amount);
          await tx.write(from, bytes);
          const other = Buffer.alloc(8);
          other.writeBigUInt64LE(b + amount);
          await tx.write(to, other);
        });
        process.stdout.write(`ok ${++done}\n`);
      } catch (error) {
        if (!isDpmsError(error)) throw error;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  }
  throw new Error(`unknown mode ${mode}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
