// `dpms kv ...`: the key-value store from the command line. `serve` runs the RESP gateway (Redis
// clients talk to one store of a cluster); `get`, `put`, `del` and `scan` are one-shot operations.
// Keys and values given on the command line are UTF-8 text (`put --value-file` takes any bytes).
// Exit status: 0 done; 1 `get` of a missing key (nothing on stdout, a message on stderr); 2 bad
// command line; 3 an operating error (its DPMS_* code printed), e.g. DPMS_NOT_FOUND for a store that
// does not exist (get, del and scan never create one; put and serve do).

import fs from 'node:fs';
import { isUtf8 } from 'node:buffer';
import type { Argv } from 'yargs';
import { KEEP, KvStore, prefixUpperBound, RespGateway, type KvEntry, type KvIteratorOptions } from '../../kvs';
import { ClusterClient, DpmsError, infoGauge, loadClusterConfig, registerClientMetrics, type ProviderName } from '../../pdsm';
import { daemonLogger, daemonOptions, metricsSuffix, startDaemonMetrics } from './daemon-options';
import { EXIT, run, untilSignal } from './run';

interface StoreArguments {
  readonly config: string;
  readonly store: string;
  readonly provider?: string;
}

/** Connect to the cluster, open the store, run `body`, and close both whatever happens. */
async function withStore<T>(argv: StoreArguments, createIfMissing: boolean, body: (store: KvStore) => Promise<T>): Promise<T> {
  const client = await ClusterClient.connect({
    config: loadClusterConfig(argv.config), provider: argv.provider as ProviderName | undefined, connectTimeoutMs: 5000, info: { role: 'cli', label: `kv store ${argv.store}` },
  });
  try {
    const store = await KvStore.open(client, argv.store, { createIfMissing });
    try {
      return await body(store);
    } finally {
      await store.close();
    }
  } finally {
    await client.close();
  }
}

/** Key or value bytes for a terminal line: as is when it is plain UTF-8 text, else quoted and escaped like redis-cli. */
function printable(bytes: Buffer): string {
  const text = bytes.toString('utf8');
  if (isUtf8(bytes) && !/[\x00-\x1f\x7f]/.test(text) && !text.startsWith('"')) return text;
  let quoted = '"';
  for (const byte of bytes) {
    if (byte === 0x5c || byte === 0x22) quoted += `\\${String.fromCharCode(byte)}`;
    else if (byte === 0x0a) quoted += '\\n';
    else if (byte === 0x0d) quoted += '\\r';
    else if (byte === 0x09) quoted += '\\t';
    else if (byte >= 0x20 && byte < 0x7f) quoted += String.fromCharCode(byte);
    else quoted += `\\x${byte.toString(16).padStart(2, '0')}`;
  }
  return `${quoted}"`;
}

/** A key or value in JSON: a string when it is UTF-8, else base64 under a "...Base64" name. */
function jsonField(name: string, bytes: Buffer | undefined): Record<string, string> {
  if (bytes === undefined) return {};
  return isUtf8(bytes) ? { [name]: bytes.toString('utf8') } : { [`${name}Base64`]: bytes.toString('base64') };
}

/** Write to stdout and wait for it to drain, so that large outputs are not cut off by the exit. */
function write(text: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(text, (error) => (error ? reject(error) : resolve())));
}

const storeOptions = <T>(y: Argv<T>) => y
  .option('config', { type: 'string', demandOption: true, describe: 'cluster config (YAML)' })
  .option('store', { type: 'string', default: 'default', describe: 'store name' })
  .option('provider', { type: 'string', choices: ['local', 'tcp', 'verbs'], describe: 'reach every node with this provider instead of the configured one' });

export function registerKvCommands(yargs: Argv): Argv {
  return yargs.command('kv', 'the key-value store: serve it to Redis clients (kv serve), or get, put, del and scan keys', (kv) => kv
    .command('serve', 'serve one store to Redis clients (RESP2) until SIGINT/SIGTERM', (y) => daemonOptions(storeOptions(y))
      .option('port', { type: 'number', default: 6380, describe: 'TCP port (0: any free port)' })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'address to listen on' }),
    (argv) => run(async () => {
      if (!Number.isInteger(argv.port) || argv.port < 0 || argv.port > 65535) throw new DpmsError('DPMS_INVALID_ARGUMENT', `--port must be 0..65535, got ${argv.port}`);
      const config = loadClusterConfig(argv.config);
      const logger = daemonLogger(argv, 'gateway', { store: argv.store, cluster: config.name });
      const metrics = await startDaemonMetrics(argv);
      let client: ClusterClient | undefined;
      try {
        // The label names the address asked for; with --port 0 the real port is only known after listening.
        client = await ClusterClient.connect({
          config, provider: argv.provider as ProviderName | undefined, connectTimeoutMs: 5000,
          info: { role: 'gateway', label: `${argv.host}:${argv.port} store ${argv.store}`, metrics: metrics?.server.url },
        });
        const store = await KvStore.open(client, argv.store);
        const gateway = new RespGateway(store, {
          metrics: metrics?.registry,
          log: (line) => logger.error(line),
        });
        try {
          const port = await gateway.start({ port: argv.port, host: argv.host });
          if (metrics) {
            const connected = client;
            infoGauge(metrics.registry, 'dpms_gateway_info', 'This gateway: its address, store and cluster (always 1).', { address: `${argv.host}:${port}`, store: store.name, cluster: config.name });
            registerClientMetrics(metrics.registry, 'gateway', () => connected.counters);
          }
          logger.info({ host: argv.host, port, metrics: metrics?.server.url }, `serving store '${store.name}' on ${argv.host}:${port}`);
          // A plain line, whatever the log level: supervisors and tests wait for "ready on port N".
          console.log(`dpms kv gateway for store '${store.name}' ready on port ${port} (pid ${process.pid})${metricsSuffix(metrics)}`);
          await untilSignal();
        } finally {
          await gateway.close();
          await store.close();
        }
      } catch (error) {
        logger.error({ err: error }, `gateway failed: ${(error as Error).message}`);
        throw error;
      } finally {
        await client?.close();
        await metrics?.server.close();
      }
      logger.info('gateway stopped');
      console.log('dpms kv gateway stopped');
      return EXIT.ok;
    }))
    .command('get <key>', 'print the value of a key (exit status 1 when it is missing)', (y) => storeOptions(y)
      .positional('key', { type: 'string', demandOption: true })
      .option('raw', { type: 'boolean', default: false, describe: 'write the exact value bytes, without the newline after them' }),
    (argv) => run(() => withStore(argv, false, async (store) => {
      const value = await store.get(Buffer.from(argv.key));
      if (value === undefined) {
        console.error(`dpms: key '${argv.key}' not found in store '${store.name}'`);
        return EXIT.problems;
      }
      await write(argv.raw ? value : Buffer.concat([value, Buffer.from('\n')]));
      return EXIT.ok;
    })))
    .command('put <key> [value]', 'set a key to a value (or to the bytes of --value-file)', (y) => storeOptions(y)
      .positional('key', { type: 'string', demandOption: true })
      .positional('value', { type: 'string' })
      .option('value-file', { type: 'string', describe: 'read the value from this file (any bytes)' }),
    (argv) => run(async () => {
      if ((argv.value === undefined) === (argv.valueFile === undefined)) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'give the value either as an argument or with --value-file');
      const value = argv.valueFile === undefined ? Buffer.from(argv.value!) : fs.readFileSync(argv.valueFile);
      return withStore(argv, true, async (store) => {
        await store.put(Buffer.from(argv.key), value);
        return EXIT.ok;
      });
    }))
    .command('del <keys..>', 'delete keys; prints how many of them existed', (y) => storeOptions(y)
      .positional('keys', { type: 'string', array: true, demandOption: true }),
    (argv) => run(() => withStore(argv, false, async (store) => {
      // One atomic update per key tells whether it existed; they run concurrently and commit together.
      const distinct = [...new Set(argv.keys)];
      const existed = await Promise.all(distinct.map(async (key) => {
        let present = false;
        await store.update(Buffer.from(key), (current) => {
          present = current !== undefined;
          return present ? undefined : KEEP;
        });
        return present;
      }));
      console.log(existed.filter(Boolean).length);
      return EXIT.ok;
    })))
    .command('scan', 'list keys and values in key order, one "key<TAB>value" line each (or JSON with --json)', (y) => storeOptions(y)
      .option('gte', { type: 'string', describe: 'from this key on' })
      .option('lt', { type: 'string', describe: 'up to, not including, this key' })
      .option('prefix', { type: 'string', describe: 'only keys starting with this (not with --gte/--lt)' })
      .option('reverse', { type: 'boolean', default: false, describe: 'in descending key order' })
      .option('limit', { type: 'number', default: -1, describe: 'at most this many entries (-1: all)' })
      .option('keys-only', { type: 'boolean', default: false, describe: 'print keys only' })
      .option('json', { type: 'boolean', default: false, describe: 'a JSON array of {key, value}; non-UTF-8 bytes as keyBase64/valueBase64' }),
    (argv) => run(async () => {
      if (argv.prefix !== undefined && (argv.gte !== undefined || argv.lt !== undefined)) throw new DpmsError('DPMS_INVALID_ARGUMENT', '--prefix cannot be combined with --gte or --lt');
      if (!Number.isInteger(argv.limit) || argv.limit < -1) throw new DpmsError('DPMS_INVALID_ARGUMENT', `--limit must be an integer >= -1, got ${argv.limit}`);
      const range: KvIteratorOptions = argv.prefix !== undefined
        ? { gte: Buffer.from(argv.prefix), lt: prefixUpperBound(Buffer.from(argv.prefix)) }
        : { gte: argv.gte === undefined ? undefined : Buffer.from(argv.gte), lt: argv.lt === undefined ? undefined : Buffer.from(argv.lt) };
      return withStore(argv, false, async (store) => {
        const iterator = store.iterator({ ...range, reverse: argv.reverse, limit: argv.limit, values: !argv.keysOnly });
        const format = (entry: KvEntry): string => (argv.json
          ? JSON.stringify({ ...jsonField('key', entry[0]), ...jsonField('value', entry[1]) })
          : argv.keysOnly ? printable(entry[0]) : `${printable(entry[0])}\t${printable(entry[1]!)}`);
        let first = true;
        try {
          if (argv.json) await write('[');
          // Print as the entries come, a page at a time, so that a large store is not held in memory.
          for (let entries = await iterator.nextv(256); entries.length > 0; entries = await iterator.nextv(256)) {
            const lines = entries.map((entry) => {
              const line = argv.json ? `${first ? '' : ','}\n  ${format(entry)}` : `${format(entry)}\n`;
              first = false;
              return line;
            });
            await write(lines.join(''));
          }
          if (argv.json) await write(first ? ']\n' : '\n]\n');
        } finally {
          await iterator.close();
        }
        return EXIT.ok;
      });
    }))
    .demandCommand(1, 'name a kv command (serve, get, put, del, scan)'));
}
