// Proves that a live node daemon (`dpms node start`) survives the frame fuzzer: random, truncated and
// oversized frames, frames without a handshake, wrong proofs, bad keys and bad regions. Afterwards
// it still serves an honest cluster client, counts what it refused, and its pool checks clean.

import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { checkPoolFile, ClusterClient } from '../../pdsm';
import { fuzzServer } from '../support/frame-fuzzer';
import { testSeed } from '../support/random';
import { startCluster, type TestCluster } from '../support/cluster';

let cluster: TestCluster;

before(async () => {
  cluster = await startCluster({ nodes: 1, transport: 'tcp', sizeMb: 16 });
});

after(async () => {
  await cluster?.stop();
});

it('a node daemon keeps serving honest clients through the frame fuzzer', async () => {
  const node = cluster.config.nodes[0];
  const client = await ClusterClient.connect({ config: cluster.config });
  const address = await client.alloc(64);
  await client.transaction(async (tx) => tx.write(address, Buffer.from('before the storm')));

  // Frames with the right key may only write the last 64 KiB of the pool: heap the allocator has not
  // handed out (the first chunks are), so the pool stays consistent.
  const writable = { region: 0, offset: node.sizeBytes - (64 << 10), length: 64 << 10 };
  const counts = await fuzzServer({ host: node.host, port: node.port, secret: cluster.config.secret, seed: testSeed('daemon fuzzer'), connections: 300, framesPerConnection: 10, writable });
  console.log(`# fuzzer against the daemon: ${JSON.stringify(counts)}`);
  assert.ok(counts.frames > 1000 && counts.handshakes > 20);

  assert.equal((await client.read(address, 16)).toString(), 'before the storm');
  await client.transaction(async (tx) => tx.write(address, Buffer.from('after the storm!')));
  const [row] = await client.status();
  const stats = row.status!.transportStats;
  console.log(`# daemon transport counters: ${JSON.stringify(stats)}`);
  assert.ok(stats.authFailures > 10 && stats.badFrames > 10 && stats.accessErrors > 5, 'the daemon counted what it refused');
  await client.close();

  await cluster.stopNode(node.id);
  const report = checkPoolFile(node.pool, node.id);
  assert.equal(report.clean, true, report.errors.join('\n'));
});
