// A client process for the transport conformance suite's contention test: it connects to the node
// named in argv[2] (JSON), reports "ready", waits for "go", then adds 1 to one word `count` times
// with fetchAndAdd and `count` times to another with a compareAndSwap retry loop, several operations
// in flight, and reports how many CAS attempts lost a race. It then closes and exits on its own: a
// connection that kept the process alive would show up as a hang in the parent.

import { connect, type Connection, type ProviderName } from '../../pdsm/transport';

export interface ChildOrders {
  readonly provider: ProviderName;
  readonly host: string;
  readonly port: number;
  readonly secretHex: string;
  readonly localRegionPaths?: readonly string[];
  readonly region: number;
  readonly faaOffset: number;
  readonly casOffset: number;
  readonly count: number;
  readonly inFlight: number;
}

export type ChildReport = { readonly type: 'ready' } | { readonly type: 'done'; readonly casRetries: number };

async function casIncrement(connection: Connection, region: number, offset: number): Promise<number> {
  let retries = 0;
  let seen = await connection.compareAndSwap(region, offset, 0n, 0n);
  for (;;) {
    const found = await connection.compareAndSwap(region, offset, seen, seen + 1n);
    if (found === seen) return retries;
    retries++;
    seen = found;
  }
}

async function main(): Promise<void> {
  const orders = JSON.parse(process.argv[2]) as ChildOrders;
  const connection = await connect({
    provider: orders.provider,
    host: orders.host,
    port: orders.port,
    secret: Buffer.from(orders.secretHex, 'hex'),
    localRegionPaths: orders.localRegionPaths,
    timeoutMs: 20_000,
  });
  // Resolves once the report is handed to the IPC channel, so disconnecting afterwards loses nothing.
  const send = (report: ChildReport): Promise<void> => new Promise((resolve, reject) => {
    process.send!(report, undefined, {}, (error) => (error ? reject(error) : resolve()));
  });
  const go = new Promise<void>((resolve) => process.once('message', () => resolve()));
  await send({ type: 'ready' });
  await go;
  let casRetries = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < orders.count) {
      next++;
      await connection.fetchAndAdd(orders.region, orders.faaOffset, 1n);
      casRetries += await casIncrement(connection, orders.region, orders.casOffset);
    }
  };
  await Promise.all(Array.from({ length: orders.inFlight }, worker));
  connection.close();
  await send({ type: 'done', casRetries });
  process.disconnect();
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
    process.disconnect?.();
  });
}
