// Proves that the 'local' provider (same host: the client maps the node's region files, messages go
// over tcp) passes the transport conformance suite, and that it refuses files that are not the ones
// the node serves.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { openPool } from '../../native';
import { connect, type ConnectTarget } from '../../pdsm/transport';
import { code } from '../support/errors';
import { TestNode, waitFor } from '../support/transport-node';
import { conformance } from './conformance';

conformance('local');

test('local: region files that are missing, too few, or of another size are refused, and nothing stays open', async () => {
  const node = TestNode.start({ provider: 'local', host: '127.0.0.1', regionSizes: [1024 * 1024, 64 * 1024] });
  const stranger = `${node.paths[1]}.stranger`;
  try {
    const target = (paths: readonly string[] | undefined): ConnectTarget => node.target({ localRegionPaths: paths });
    await assert.rejects(connect(target(undefined)), code('DPMS_INVALID_ARGUMENT'));
    await assert.rejects(connect(target([])), code('DPMS_INVALID_ARGUMENT'));
    await assert.rejects(connect(target([node.paths[0]])), code('DPMS_PROTOCOL'));
    await assert.rejects(connect(target([node.paths[0], `${node.paths[1]}.missing`])), code('DPMS_NOT_FOUND'));
    openPool(stranger, { createSizeBytes: 128 * 1024 }).close();
    await assert.rejects(connect(target([node.paths[0], stranger])), code('DPMS_PROTOCOL'));
    await assert.rejects(connect(target([node.paths[1], node.paths[0]])), code('DPMS_PROTOCOL'));
    // Every refused client authenticated over tcp first; each of those connections was closed again.
    await waitFor(() => node.opened.length === 4 && node.closed.size === 4, 10_000, 'the refused clients\' tcp connections to close');
    const connection = await connect(target(node.paths));
    assert.equal(connection.isOpen, true);
  } finally {
    node.stop();
    fs.rmSync(stranger, { force: true });
  }
});

test('an unknown provider is DPMS_INVALID_ARGUMENT', async () => {
  await assert.rejects(connect({ provider: 'carrier-pigeon' as 'tcp', host: '127.0.0.1', port: 1, secret: Buffer.alloc(32) }), code('DPMS_INVALID_ARGUMENT'));
});
