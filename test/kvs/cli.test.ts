// Proves the `dpms kv` one-shot commands as child processes on a real 1-node cluster: put (argument
// and --value-file), get (exit 0 with the value; exit 1, empty stdout and a message for a missing key;
// exit 3 DPMS_NOT_FOUND for a missing store), del (prints how many keys existed), scan (text and JSON,
// ranges, prefix, reverse, limit, non-UTF-8 bytes escaped or in base64), and usage errors (exit 2).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, startCluster, type TestCluster } from '../support/cluster';

interface Result {
  readonly status: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

describe('dpms kv get/put/del/scan', () => {
  let cluster: TestCluster;

  before(async () => {
    cluster = await startCluster({ nodes: 1 });
  });
  after(async () => {
    await cluster?.stop();
  });

  const kv = (...args: string[]): Promise<Result> => new Promise((resolve, reject) => {
    const [command, ...rest] = args;
    const child = spawn(process.execPath, [CLI, 'kv', command!, '--config', cluster.configPath, ...rest], { stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (data: Buffer) => stdout.push(data));
    child.stderr.on('data', (data: Buffer) => { stderr += data.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout: Buffer.concat(stdout), stderr });
    });
  });
  const show = (result: Result): string => `status ${result.status}\nstdout: ${result.stdout.toString()}\nstderr: ${result.stderr}`;
  const ok = async (...args: string[]): Promise<string> => {
    const result = await kv(...args);
    assert.equal(result.status, 0, show(result));
    return result.stdout.toString();
  };

  test('put then get prints the value; a missing key exits 1 with nothing on stdout', async () => {
    assert.equal(await ok('put', 'greeting', 'hello wörld'), '');
    assert.equal(await ok('get', 'greeting'), 'hello wörld\n');
    assert.equal(await ok('get', 'greeting', '--raw'), 'hello wörld');
    // Keys that look like numbers stay text.
    await ok('put', '007', '1e3');
    assert.equal(await ok('get', '007'), '1e3\n');
    const missing = await kv('get', 'nobody');
    assert.equal(missing.status, 1, show(missing));
    assert.equal(missing.stdout.length, 0);
    assert.match(missing.stderr, /key 'nobody' not found in store 'default'/);
    await ok('put', 'empty', '');
    assert.equal(await ok('get', 'empty'), '\n');
  });

  test('put --value-file stores any bytes; get --raw returns them exactly', async () => {
    const file = path.join(cluster.dir, 'value.bin');
    const bytes = Buffer.from([0x00, 0xff, 0x0a, 0x0d, 0x80, 0x41]);
    fs.writeFileSync(file, bytes);
    await ok('put', 'binary', '--value-file', file, '--store', 'files');
    const raw = await kv('get', 'binary', '--raw', '--store', 'files');
    assert.equal(raw.status, 0, show(raw));
    assert.deepEqual(raw.stdout, bytes);
  });

  test('del prints how many of the keys existed', async () => {
    await ok('put', 'del:a', '1');
    await ok('put', 'del:b', '2');
    assert.equal(await ok('del', 'del:a', 'del:b', 'del:never', 'del:a'), '2\n');
    assert.equal((await kv('get', 'del:a')).status, 1);
    assert.equal(await ok('del', 'del:a'), '0\n');
  });

  test('scan lists entries in key order, with ranges, prefix, reverse, limit and JSON', async () => {
    for (const key of ['s:a', 's:b', 's:c', 's:d']) await ok('put', key, `value of ${key}`, '--store', 'scan');
    await ok('put', 't:z', 'tab\there', '--store', 'scan');
    assert.equal(await ok('scan', '--store', 'scan'), 's:a\tvalue of s:a\ns:b\tvalue of s:b\ns:c\tvalue of s:c\ns:d\tvalue of s:d\nt:z\t"tab\\there"\n');
    assert.equal(await ok('scan', '--store', 'scan', '--prefix', 's:', '--keys-only'), 's:a\ns:b\ns:c\ns:d\n');
    assert.equal(await ok('scan', '--store', 'scan', '--gte', 's:b', '--lt', 's:d', '--keys-only'), 's:b\ns:c\n');
    assert.equal(await ok('scan', '--store', 'scan', '--reverse', '--limit', '2', '--keys-only'), 't:z\ns:d\n');
    const json = JSON.parse(await ok('scan', '--store', 'scan', '--prefix', 's:', '--limit', '2', '--json')) as unknown;
    assert.deepEqual(json, [{ key: 's:a', value: 'value of s:a' }, { key: 's:b', value: 'value of s:b' }]);
    assert.deepEqual(JSON.parse(await ok('scan', '--store', 'scan', '--prefix', 'nothing', '--json')), []);
    // Bytes that are not UTF-8: escaped in text, base64 in JSON.
    const file = path.join(cluster.dir, 'latin1.bin');
    fs.writeFileSync(file, Buffer.from([0xe9, 0x00]));
    await ok('put', 'bin', '--value-file', file, '--store', 'scan');
    assert.equal(await ok('scan', '--store', 'scan', '--prefix', 'bin'), 'bin\t"\\xe9\\x00"\n');
    assert.deepEqual(JSON.parse(await ok('scan', '--store', 'scan', '--prefix', 'bin', '--json')), [{ key: 'bin', valueBase64: Buffer.from([0xe9, 0x00]).toString('base64') }]);
  });

  test('a missing store is DPMS_NOT_FOUND (exit 3) for get, del and scan; bad arguments exit 2', async () => {
    for (const args of [['get', 'k'], ['del', 'k'], ['scan']]) {
      const result = await kv(...args, '--store', 'no such store');
      assert.equal(result.status, 3, show(result));
      assert.match(result.stderr, /DPMS_NOT_FOUND: store 'no such store' does not exist/);
    }
    const noValue = await kv('put', 'k');
    assert.equal(noValue.status, 2, show(noValue));
    assert.match(noValue.stderr, /give the value either as an argument or with --value-file/);
    const both = await kv('scan', '--prefix', 'a', '--gte', 'b');
    assert.equal(both.status, 2, show(both));
    const noKey = await kv('get');
    assert.equal(noKey.status, 2, show(noKey));
    const tooLarge = await kv('put', 'x'.repeat(3000), 'v');
    assert.equal(tooLarge.status, 3, show(tooLarge));
    assert.match(tooLarge.stderr, /DPMS_KEY_TOO_LARGE/);
  });
});
