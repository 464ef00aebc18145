// Proves the progress display's plain mode (what CI and pipes see): lines with percentages, at most
// one per 10 % however many updates, a last line when stopped short, nothing after stop, nothing in
// quiet mode; and that `dpms format` to a non-terminal prints such lines on stderr and still formats.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { startProgress } from '../../scripts/commands/progress';
import { runCli } from '../support/cli';

/** A stream that is not a terminal and keeps what was written. */
function collector(): { stream: NodeJS.WriteStream; lines: () => string[] } {
  let text = '';
  const stream = { isTTY: false, write: (chunk: string) => { text += chunk; return true; } } as unknown as NodeJS.WriteStream;
  return { stream, lines: () => text.split('\n').filter((line) => line !== '') };
}

test('plain progress: 1000 updates give at most 11 lines, with rising percentages up to 100 %', () => {
  const out = collector();
  const progress = startProgress({ label: 'loading', total: 1000, unit: 'records', stream: out.stream });
  for (let done = 1; done <= 1000; done++) progress.update(done);
  progress.stop();
  const lines = out.lines();
  assert.ok(lines.length >= 2 && lines.length <= 11, `${lines.length} lines:\n${lines.join('\n')}`);
  const percents = lines.map((line) => {
    const match = /^loading: (\d+)% \((\d+)\/1000 records\)$/.exec(line);
    assert.ok(match, line);
    return Number(match[1]);
  });
  assert.equal(percents[0], 0);
  assert.equal(percents[percents.length - 1], 100);
  for (let i = 1; i < percents.length; i++) assert.ok(percents[i] > percents[i - 1], percents.join(' '));
});

test('plain progress: auto mode on a non-terminal is plain; a note shows; stopping short says where; nothing after stop', () => {
  const out = collector();
  const progress = startProgress({ label: 'step', total: 4, mode: 'auto', stream: out.stream });
  const { increment } = progress; // usable on its own
  increment(1, 'first');
  progress.stop();
  progress.update(4);
  assert.deepEqual(out.lines(), ['step: 0% (0/4)', 'step: 25% (1/4) first', 'step: 25% (1/4) first']);
});

test('quiet progress writes nothing', () => {
  const out = collector();
  const progress = startProgress({ label: 'x', total: 10, mode: 'quiet', stream: out.stream });
  progress.update(5);
  progress.stop();
  assert.deepEqual(out.lines(), []);
});

const pool = path.join('/dev/shm', `dpms-progress-test-${process.pid}.pool`);
after(() => fs.rmSync(pool, { force: true }));

test('dpms format to a pipe prints plain progress lines on stderr and formats the pool', () => {
  const result = runCli(['format', pool, '--size', '64M', '--node', '3'], 60_000);
  assert.equal(result.status, 0, result.stderr);
  const lines = result.stderr.split('\n').filter((line) => line.startsWith(`formatting ${pool}: `));
  assert.ok(lines.length >= 2 && lines.length <= 11, result.stderr);
  assert.match(lines[0], /: 0% \(0\/64 MiB\)$/);
  assert.match(lines[lines.length - 1], /: 100% \(64\/64 MiB\)$/);
  assert.doesNotMatch(result.stdout, /%/, 'progress stays off stdout');
  assert.match(result.stdout, /^formatted .*: node 3/m);
  const inspect = runCli(['inspect', pool, '--json'], 60_000);
  assert.equal(inspect.status, 0, inspect.stderr);
  const report = JSON.parse(inspect.stdout) as { info: { nodeId: number; layout: { poolBytes: number } } };
  assert.equal(report.info.nodeId, 3);
  assert.equal(report.info.layout.poolBytes, 64 * 1024 * 1024);
  assert.equal(fs.statSync(pool).size, 64 * 1024 * 1024);

  // A refusal (the file exists) prints no progress at all.
  const again = runCli(['format', pool, '--size', '64M'], 60_000);
  assert.equal(again.status, 3);
  assert.doesNotMatch(again.stderr, /formatting/);
  assert.match(again.stderr, /DPMS_EXISTS/);
});
