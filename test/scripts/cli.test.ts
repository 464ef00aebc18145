// Proves the dpms CLI's contract as a child process: format, inspect (text and JSON), check (0 clean, 1 damaged, 3 unreadable), refusal to overwrite, usage errors with exit status 2, and a small bench run.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { offsetOf, Pdsm, verifyPool } from '../../pdsm';

const CLI = path.join(__dirname, '../../scripts/cli.js');
const SMALL_POOL = ['--size', '2M', '--chunk-size', '16K', '--lanes', '2', '--lane-size', '16K'];

const created: string[] = [];
let counter = 0;
function tempPath(tag: string): string {
  const file = path.join('/dev/shm', `dpms-cli-test-${process.pid}-${Date.now()}-${counter++}-${tag}.pool`);
  created.push(file);
  return file;
}
after(() => {
  for (const file of created) fs.rmSync(file, { force: true });
});

interface Result {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function dpms(...args: string[]): Result {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function show(result: Result): string {
  return `status ${result.status}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

function formatted(tag: string): string {
  const file = tempPath(tag);
  const result = dpms('format', file, ...SMALL_POOL);
  assert.equal(result.status, 0, show(result));
  return file;
}

test('format creates a pool and prints what it made', () => {
  const file = tempPath('format');
  const result = dpms('format', file, ...SMALL_POOL, '--node', '7');
  assert.equal(result.status, 0, show(result));
  assert.match(result.stdout, new RegExp(`formatted ${file.replace(/[.]/g, '\\.')}: node 7, uuid [0-9a-f-]{36}`));
  assert.match(result.stdout, /size 2\.0 MiB, heap \d+ chunks x 16\.0 KiB, log 2 lanes x 16\.0 KiB/);
  assert.match(result.stdout, /persistence: /);
  assert.equal(fs.statSync(file).size, 2 * 1024 * 1024);
  assert.equal(fs.readFileSync(file).toString('ascii', 0, 8), 'DPMSPOOL');
});

test('format refuses an existing file without --force (exit 3, DPMS_EXISTS) and overwrites with it', () => {
  const file = formatted('exists');
  const before = fs.readFileSync(file);
  const refused = dpms('format', file, ...SMALL_POOL);
  assert.equal(refused.status, 3, show(refused));
  assert.match(refused.stderr, /DPMS_EXISTS/);
  assert.ok(fs.readFileSync(file).equals(before), 'a refused format changed the file');
  const forced = dpms('format', file, '--size', '1M', '--chunk-size', '16K', '--lanes', '2', '--lane-size', '16K', '--force');
  assert.equal(forced.status, 0, show(forced));
  assert.equal(fs.statSync(file).size, 1024 * 1024);
});

test('inspect prints the node and sizes; --json parses', () => {
  const file = tempPath('inspect');
  assert.equal(dpms('format', file, ...SMALL_POOL, '--node', '12').status, 0);
  const text = dpms('inspect', file);
  assert.equal(text.status, 0, show(text));
  assert.match(text.stdout, /node\s+12\n/);
  assert.match(text.stdout, /size\s+2\.0 MiB \(file 2\.0 MiB\)/);
  assert.match(text.stdout, /format\s+version 1, layout dpms-pdsm/);
  assert.match(text.stdout, /log lanes\s+2 unused/);
  const json = dpms('inspect', file, '--json');
  assert.equal(json.status, 0, show(json));
  const report = JSON.parse(json.stdout) as {
    info: { nodeId: number; layout: { poolBytes: number; chunkBytes: number; laneCount: number } };
    fileBytes: number;
    lanes: Array<{ state: string }>;
    usage: { objects: number; clean: boolean };
  };
  assert.equal(report.info.nodeId, 12);
  assert.equal(report.info.layout.poolBytes, 2 * 1024 * 1024);
  assert.equal(report.info.layout.chunkBytes, 16 * 1024);
  assert.equal(report.fileBytes, 2 * 1024 * 1024);
  assert.deepEqual(report.lanes.map((lane) => lane.state), ['empty', 'empty']);
  assert.equal(report.usage.objects, 0);
  assert.equal(report.usage.clean, true);
});

test('check exits 0 on a clean pool and 1 on a damaged one', async () => {
  const file = formatted('check');
  const clean = dpms('check', file);
  assert.equal(clean.status, 0, show(clean));
  assert.match(clean.stdout, /: clean/);

  // Put objects in the pool, then damage the header of the chunk that holds them.
  const dsm = await Pdsm.open({ nodes: [{ path: file }] });
  let headerAt: number;
  try {
    await dsm.alloc(100);
    await dsm.alloc(100);
    const node = dsm.node(0);
    const layout = node.layout;
    const objects: number[] = [];
    verifyPool(node.pm.buffer, node.info, (object) => objects.push(offsetOf(object.address)));
    assert.equal(objects.length, 2);
    const chunk = Math.floor((objects[0] - layout.heapOffset) / layout.chunkBytes);
    headerAt = layout.chunkMetaOffset + chunk * layout.chunkMetaBytes;
  } finally {
    await dsm.close();
  }
  const withObjects = dpms('check', file, '--json');
  assert.equal(withObjects.status, 0, show(withObjects));
  assert.equal((JSON.parse(withObjects.stdout) as { objects: number }).objects, 2);

  const fd = fs.openSync(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, headerAt + 8);
    byte[0] ^= 0x40;
    fs.writeSync(fd, byte, 0, 1, headerAt + 8);
  } finally {
    fs.closeSync(fd);
  }
  const before = fs.readFileSync(file);
  const damaged = dpms('check', file);
  assert.equal(damaged.status, 1, show(damaged));
  assert.match(damaged.stdout, /problem/);
  assert.match(damaged.stdout, /error: .*chunk/);
  const json = dpms('check', file, '--json');
  assert.equal(json.status, 1, show(json));
  const report = JSON.parse(json.stdout) as { clean: boolean; errors: string[] };
  assert.equal(report.clean, false);
  assert.ok(report.errors.length > 0);
  assert.ok(fs.readFileSync(file).equals(before), 'check wrote the pool');
});

test('check and inspect exit 3 with the error code when the superblock is unreadable or the file missing', () => {
  const file = formatted('badsb');
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, Buffer.from([0xff]), 0, 1, 40);
  } finally {
    fs.closeSync(fd);
  }
  for (const command of ['check', 'inspect']) {
    const result = dpms(command, file);
    assert.equal(result.status, 3, `${command}: ${show(result)}`);
    assert.match(result.stderr, /dpms: DPMS_CHECKSUM: /);
    assert.doesNotMatch(result.stderr, /\n\s+at /, 'a typed error printed a stack trace');
  }
  const wrongNode = dpms('check', formatted('wrongnode'), '--node', '3');
  assert.equal(wrongNode.status, 3, show(wrongNode));
  assert.match(wrongNode.stderr, /DPMS_WRONG_NODE/);
  const missing = dpms('check', tempPath('missing'));
  assert.equal(missing.status, 3, show(missing));
  assert.match(missing.stderr, /DPMS_NOT_FOUND/);
});

test('bad arguments exit 2 with usage text', () => {
  const none = dpms();
  assert.equal(none.status, 2, show(none));
  assert.match(none.stderr, /dpms <command> \[options\]/);
  assert.match(none.stderr, /name a command/);

  const unknown = dpms('frobnicate');
  assert.equal(unknown.status, 2, show(unknown));
  assert.match(unknown.stderr, /Commands:/);
  assert.match(unknown.stderr, /Unknown argument: frobnicate/);

  const garbageFile = tempPath('garbage');
  const garbage = dpms('format', garbageFile, '--size', 'garbage');
  assert.equal(garbage.status, 2, show(garbage));
  assert.match(garbage.stderr, /--size: cannot parse size 'garbage' \(examples: /);
  assert.match(garbage.stderr, /dpms format <pool>/);
  assert.equal(fs.existsSync(garbageFile), false);

  const missingFile = tempPath('nosize');
  const missing = dpms('format', missingFile);
  assert.equal(missing.status, 2, show(missing));
  assert.match(missing.stderr, /dpms format <pool>/);
  assert.match(missing.stderr, /Missing required argument: size/);
  assert.equal(fs.existsSync(missingFile), false);

  const badChunk = dpms('format', tempPath('badchunk'), '--size', '2M', '--chunk-size', '5000');
  assert.equal(badChunk.status, 2, show(badChunk));
  assert.match(badChunk.stderr, /DPMS_INVALID_ARGUMENT: chunk size 5000/);
});

test('bench pdsm runs a small measurement and prints the goal', () => {
  const result = dpms('bench', 'pdsm', '--ops', '200', '--size', '32M');
  assert.equal(result.status, 0, show(result));
  assert.match(result.stdout, /goal:/);
  assert.ok(!fs.readdirSync('/dev/shm').some((name) => name.startsWith('dpms-bench-')), 'bench left its pool behind');
});
