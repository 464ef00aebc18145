// A DpmsLevel user in its own process, for test/kvs/level.test.ts: opens store <name> of the cluster
// at <config> (its own client) and answers one JSON line per command line on stdin:
//   put <key> <value>   -> {"ok":true}
//   get <key>           -> {"value":"..."} (null when absent)
//   entries             -> {"entries":[[key, value], ...]}
//   close               -> {"ok":true}, then exits
// Keys and values are utf8 words without spaces. It prints {"ready":true} once open.

import readline from 'node:readline';
import { DpmsLevel } from '../../kvs';

async function main(): Promise<void> {
  const [configPath, name] = process.argv.slice(2);
  const db = new DpmsLevel(name, { config: configPath });
  await db.open();
  const reply = (message: object): void => { process.stdout.write(`${JSON.stringify(message)}\n`); };
  reply({ ready: true });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, key, value] = line.trim().split(' ');
    if (command === 'put') {
      await db.put(key, value);
      reply({ ok: true });
    } else if (command === 'get') {
      reply({ value: (await db.get(key)) ?? null });
    } else if (command === 'entries') {
      reply({ entries: await db.iterator().all() });
    } else if (command === 'close') {
      await db.close();
      reply({ ok: true });
      break;
    } else {
      reply({ error: `unknown command ${JSON.stringify(line)}` });
    }
  }
  lines.close();
}

main().catch((error: unknown) => {
  process.stdout.write(`${JSON.stringify({ error: String(error) })}\n`);
  process.exit(1);
});
