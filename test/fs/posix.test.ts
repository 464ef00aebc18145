// The POSIX conformance suite of pDFS: proves that a real dpms mount (a 3-node cluster on the local
// transport, mounted with `dpms mount`) answers every case of the tables in test/fs/posix/ (one
// module per operation) with the result or errno POSIX and Linux prescribe: permission matrices run
// as uid 65534 (and 65533), rename corner cases, hard-link counts, and which timestamps move.
//
// Each case runs in its own fresh directory. Root cases use fs.promises from this process (never a
// synchronous call on the mount); other users' cases run in a child `node -e` (test/support/as-user.ts).
//
// DPMS_POSIX_TARGET=tmpfs runs the same tables against a directory on tmpfs (/dev/shm) instead: the
// kernel's own tmpfs is the reference, so a new case must pass there first. A case that passes on
// tmpfs but fails on dpms is a dpms bug. CI runs only the dpms mount. Needs root (FUSE mounts with
// allow_other, and the children switch users), python3 and coreutils.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runAs } from '../support/as-user';
import { startCluster, type TestCluster } from '../support/cluster';
import { startMount, type TestMount } from '../support/mount';
import { runCase, USER, type PosixCase, type Suite, type Target } from '../support/posix';
import { TABLES } from './posix/index';

const TMPFS_MAGIC = 0x01021994;
const target: Target = process.env.DPMS_POSIX_TARGET === 'tmpfs' ? 'tmpfs' : 'dpms';

/** A writable directory on a file system other than `root`'s, for the EXDEV cases. */
async function elsewhereThan(root: string): Promise<string> {
  const rootDevice = (await fs.stat(root)).dev;
  for (const candidate of ['/dev/shm', os.tmpdir(), '/var/tmp']) {
    const stats = await fs.stat(candidate).catch(() => undefined);
    if (!stats || stats.dev === rootDevice) continue;
    const dir = await fs.mkdtemp(path.join(candidate, 'dpms-posix-elsewhere-'));
    await fs.chmod(dir, 0o777);
    return dir;
  }
  throw new Error(`no directory on another file system than ${root} for the EXDEV cases`);
}

function whyNot(testCase: PosixCase): string | undefined {
  if (testCase.only && testCase.only.target !== target) return `${testCase.only.target} only: ${testCase.only.why}`;
  if (testCase.requires) {
    const file = path.join('/proc/sys', testCase.requires.sysctl);
    const value = existsSync(file) ? readFileSync(file, 'utf8').trim() : 'missing';
    if (value !== testCase.requires.value) return `needs ${testCase.requires.sysctl} = ${testCase.requires.value} (it is ${value})`;
  }
  return undefined;
}

describe(`POSIX conformance on ${target}`, () => {
  let cluster: TestCluster | undefined;
  let mount: TestMount | undefined;
  let scratch: string | undefined;
  let suite: Suite;
  let umask = 0o022;

  before(async () => {
    // The tables expect the usual umask of 022 for the modes of new files and directories.
    umask = process.umask(0o022);
    let root: string;
    if (target === 'tmpfs') {
      scratch = await fs.mkdtemp('/dev/shm/dpms-posix-');
      assert.equal((await fs.statfs(scratch)).type, TMPFS_MAGIC, '/dev/shm is not tmpfs');
      root = scratch;
    } else {
      cluster = await startCluster({ nodes: 3, transport: 'local', sizeMb: 64 });
      mount = await startMount(cluster);
      root = mount.dir;
    }
    await fs.chmod(root, 0o755);
    suite = { target, root, elsewhere: await elsewhereThan(root), python: existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3' };
    await Promise.all(TABLES.map((table) => fs.mkdir(path.join(root, table.operation), { mode: 0o755 })));
    const probe = await runAs(USER, async () => [process.getuid?.(), process.getgid?.(), process.getgroups?.()], { make: (input: null) => input, input: null });
    assert.deepEqual(probe.value, [USER.uid, USER.gid, [USER.gid]], 'the children must run as exactly uid 65534, gid 65534');
  }, { timeout: 60_000 });

  after(async () => {
    process.umask(umask);
    await mount?.stop();
    await cluster?.stop();
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
    if (suite?.elsewhere) await fs.rm(suite.elsewhere, { recursive: true, force: true });
  });

  for (const table of TABLES) {
    describe(table.operation, () => {
      table.cases.forEach((testCase, index) => {
        const who = testCase.as ? ` [as ${testCase.as.name}]` : '';
        const skip = whyNot(testCase);
        const todo = target === 'dpms' ? testCase.todo : undefined;
        test(`${testCase.name}${who}`, { skip, todo }, () =>
          runCase(suite, path.join(suite.root, table.operation, String(index).padStart(3, '0')), testCase));
      });
    });
  }
});
