// A metadata-heavy workload on a pDFS mount for the crash tests, run as a child process: it builds
// small trees under new/, moves them to done/ (renames across directories), deletes old ones, and
// writes files under keep/ that it fsyncs and never touches again. It logs to a file outside the
// mount, after each step completed: "synced <name> <sha256>", "tree <id>" (complete under new/),
// "moving <id>" / "moved <id>", "deleting <id>". It runs until the mount fails it or it is killed.
// Usage: node crash-worker.js <mount dir> <log file> <seed>

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Random } from '../support/random';

async function main(): Promise<void> {
  const [root, logFile, seedText] = process.argv.slice(2);
  const random = new Random(Number(seedText));
  const log = (line: string): void => fs.appendFileSync(logFile, `${line}\n`);
  const p = fs.promises;
  for (const dir of ['new', 'done', 'keep']) await p.mkdir(path.join(root, dir), { recursive: true });
  const trees: number[] = [];
  for (let id = 0; ; id++) {
    // A tree: 2 directories, 6 small files, a symlink.
    const tree = path.join(root, 'new', `t${id}`);
    await p.mkdir(path.join(tree, 'a', 'b'), { recursive: true });
    for (let i = 0; i < 6; i++) await p.writeFile(path.join(tree, i % 2 ? 'a' : 'a/b', `f${i}`), `tree ${id} file ${i}\n`.repeat(1 + random.int(50)));
    await p.symlink('a/b/f0', path.join(tree, 'link'));
    log(`tree ${id}`);
    // Some of them are moved across directories (atomically), some of the moved ones deleted.
    if (random.int(3) > 0) {
      log(`moving ${id}`);
      await p.rename(tree, path.join(root, 'done', `t${id}`));
      log(`moved ${id}`);
      trees.push(id);
    }
    if (trees.length > 5 && random.int(2) === 0) {
      const victim = trees.splice(random.int(trees.length), 1)[0];
      log(`deleting ${victim}`);
      await p.rm(path.join(root, 'done', `t${victim}`), { recursive: true });
    }
    // A file that must survive whatever happens next: written, fsync'ed, then logged.
    if (id % 3 === 0) {
      const bytes = crypto.randomBytes(1 + random.int(3 * 1024 * 1024));
      const name = `k${id}`;
      const handle = await p.open(path.join(root, 'keep', name), 'w');
      await handle.write(bytes);
      await handle.sync();
      await handle.close();
      log(`synced ${name} ${crypto.createHash('sha256').update(bytes).digest('hex')}`);
    }
  }
}

main().catch((error: unknown) => {
  console.error(`crash worker stopped: ${(error as Error).message}`);
  process.exit(1);
});
