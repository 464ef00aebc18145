// Runs abstract-level's own conformance suite (abstract-level/test, on tape) against DpmsLevel on a
// real cluster started here, and prints tape's TAP output followed by a plain `N passed, N failed`
// line (assertions). A program, not a node:test file: test/kvs/abstract-level.test.ts runs it as a
// child process and checks its summary. Options: --nodes N (default 1), --transport local|tcp
// (default local), --timeout-ms (whole suite, default 300000).

import { parseArgs } from 'node:util';
import tape from 'tape';
import { ClusterClient, DpmsError } from '../../pdsm';
import { DpmsLevel, type DpmsLevelOptions } from '../../kvs';
import { startCluster, type TestCluster } from '../support/cluster';

// abstract-level/test ships without types; this is the part of its interface used here.
interface SuiteOptions {
  readonly test: tape.Harness;
  readonly factory: (options?: DpmsLevelOptions<unknown, unknown>) => DpmsLevel<unknown, unknown>;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const suite = require('abstract-level/test') as (options: SuiteOptions) => void;

const { values: args } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1' },
    transport: { type: 'string', default: 'local' },
    'timeout-ms': { type: 'string', default: '300000' },
  },
});
const nodes = Number(args.nodes);
const transport = args.transport as 'local' | 'tcp';
const timeoutMs = Number(args['timeout-ms']);
if (!Number.isInteger(nodes) || nodes < 1 || nodes > 5 || (transport !== 'local' && transport !== 'tcp') || !(timeoutMs > 0)) {
  throw new DpmsError('DPMS_INVALID_ARGUMENT', 'usage: abstract-level-suite.js [--nodes 1..5] [--transport local|tcp] [--timeout-ms N]');
}

async function main(): Promise<void> {
  // Every test makes fresh stores: give the pools room for a few thousand of them.
  const cluster: TestCluster = await startCluster({ nodes, transport, sizeMb: 64 });
  let client: ClusterClient | undefined;
  let passed = 0;
  let failed = 0;
  let current = '';

  const finish = async (exitCode: number): Promise<never> => {
    await client?.close().catch(() => undefined);
    await cluster.stop();
    process.exit(exitCode);
  };

  // Stopped from outside (the node:test wrapper's own timeout): still stop the nodes.
  process.once('SIGTERM', () => {
    process.stdout.write(`\nBail out! stopped by SIGTERM; last test started: ${current}\n${passed} passed, ${failed + 1} failed\n`);
    void finish(1);
  });

  // A hung test would otherwise hang the whole run (tape has no timeouts); say where it hung.
  const watchdog = setTimeout(() => {
    process.stdout.write(`\nBail out! the suite did not finish in ${timeoutMs} ms; last test started: ${current}\n${passed} passed, ${failed + 1} failed\n`);
    void finish(1);
  }, timeoutMs);

  try {
    client = await ClusterClient.connect({ config: cluster.config });
    process.stdout.write(`# DpmsLevel on a ${nodes}-node cluster (${transport})\n`);

    // A harness of our own closes itself when the last test ends (tape's default one waits for process
    // exit), so its summary is written while the cluster is still up and the stream then ends.
    const harness = tape.createHarness();
    // Count assertions from the TAP text itself, so the plain summary agrees with tape's own.
    const stream = harness.createStream();
    let partial = '';
    stream.on('data', (chunk: Buffer | string) => {
      const text = chunk.toString();
      process.stdout.write(text);
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (/^ok \d+/.test(line)) passed++;
        else if (/^not ok \d+/.test(line)) failed++;
        else if (line.startsWith('# ') && !/^# (tests|pass|fail|ok)\b/.test(line)) current = line.slice(2);
      }
    });

    const shared = client;
    let serial = 0;
    // The stream ends after tape has written its own summary (# tests, # pass, # fail).
    stream.on('end', () => {
      clearTimeout(watchdog);
      process.stdout.write(`${passed} passed, ${failed} failed\n`);
      void finish(failed === 0 && passed > 0 ? 0 : 1);
    });
    suite({
      test: harness,
      factory: (options) => new DpmsLevel<unknown, unknown>(`t${serial++}`, { ...options, client: shared }),
    });
  } catch (error) {
    clearTimeout(watchdog);
    process.stdout.write(`Bail out! ${String(error)}\n0 passed, 1 failed\n`);
    await finish(1);
  }
}

main().catch((error: unknown) => {
  process.stdout.write(`Bail out! ${String(error)}\n0 passed, 1 failed\n`);
  process.exit(1);
});
