// Proves the tcp provider's server survives hostile input: thousands of seeded fuzzer frames (random
// bytes, truncated and oversized frames, frames before the handshake, hostile frames after an honest
// handshake) leave it serving an honest client correctly, every kind of refusal is counted, and no
// byte outside the range the fuzzer was allowed to write changed: neither in the target pool nor in a
// second, canary pool served next to it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';

import { connect, openPool, serve, type PmMapping } from '../../native/index';
import { fuzzServer } from '../support/frame-fuzzer';
import { Random, testSeed } from '../support/random';

const files: string[] = [];
after(() => {
  for (const file of files) fs.rmSync(file, { force: true });
});

function pool(tag: string, sizeBytes: number): PmMapping {
  const dir = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  const file = path.join(dir, `dpms-fuzz-${process.pid}-${Date.now()}-${tag}.pool`);
  files.push(file);
  return openPool(file, { createSizeBytes: sizeBytes });
}

test('the tcp server survives the frame fuzzer and still serves an honest client', async () => {
  const seed = testSeed('tcp frame fuzzer');
  const random = new Random(seed);
  const secret = Buffer.from('fuzz-test-secret-fuzz-test-secret');
  const target = pool('target', 1 << 20);
  const canary = pool('canary', 256 << 10);
  target.buffer.set(random.bytes(target.sizeBytes));
  canary.buffer.set(random.bytes(canary.sizeBytes));
  const writable = { region: 0, offset: 64 << 10, length: 64 << 10 };
  const targetBefore = Buffer.from(target.buffer);
  const canaryBefore = Buffer.from(canary.buffer);

  let messages = 0;
  const server = serve('tcp', {
    host: '127.0.0.1',
    port: 0,
    secret,
    nodeId: 3,
    regions: [target, canary],
    maxMessageBytes: 4096,
    onEvent: (event) => {
      if (event.type === 'message') {
        messages++;
        server.reply(event.connection, event.requestId, event.payload);
      }
    },
  });
  try {
    const counts = await fuzzServer({ host: '127.0.0.1', port: server.port, secret, seed, connections: 800, framesPerConnection: 12, writable });
    console.log(`# fuzzer: ${JSON.stringify(counts)}`);
    assert.ok(counts.frames >= 3000, `sent ${counts.frames} frames`);
    assert.ok(counts.handshakes > 100);

    const stats = server.stats();
    console.log(`# server: ${JSON.stringify(stats)}`);
    assert.equal(stats.connectionsAccepted, counts.connections);
    assert.ok(stats.authFailures > 50, 'pre-handshake garbage and wrong proofs were counted');
    assert.ok(stats.badFrames > 50, 'malformed frames were counted');
    assert.ok(stats.accessErrors > 20, 'access violations were counted');
    assert.equal(stats.authFailures + stats.badFrames + stats.accessErrors, counts.closedByServer, 'every connection the server closed was counted once');
    assert.equal(messages, 0, 'no fuzzer frame was delivered as a message');

    // Nothing outside the writable window changed, in either region.
    assert.ok(target.buffer.subarray(0, writable.offset).equals(targetBefore.subarray(0, writable.offset)), 'target below the window');
    const end = writable.offset + writable.length;
    assert.ok(target.buffer.subarray(end).equals(targetBefore.subarray(end)), 'target above the window');
    assert.ok(canary.buffer.equals(canaryBefore), 'canary region');
    assert.ok(!target.buffer.subarray(writable.offset, end).equals(targetBefore.subarray(writable.offset, end)), 'the fuzzer did write inside its window');

    // An honest client is served correctly.
    const client = await connect('tcp', { host: '127.0.0.1', port: server.port, secret, maxMessageBytes: 4096 });
    const rkey = client.regions[0].rkey;
    for (let i = 0; i < 50; i++) {
      const length = 1 + random.int(32 << 10);
      const offset = random.int(target.sizeBytes - length + 1);
      const data = random.bytes(length);
      await client.write(0, offset, data, rkey);
      assert.ok((await client.read(0, offset, length, rkey)).equals(data));
    }
    assert.equal(await client.fetchAndAdd(1, 0, 1n, client.regions[1].rkey), canaryBefore.readBigUInt64LE(0));
    assert.equal((await client.call(Buffer.from('hello'))).toString(), 'hello');
    client.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(server.stats().connectionsOpen, 0);
  } finally {
    server.close();
    target.close();
    canary.close();
  }
});
