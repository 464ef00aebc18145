// `dpms check`: the consistency check of one pool file (`dpms check POOL`, read-only, offline) or of a
// whole cluster (`dpms check [--dir D | --config C] [--repair]`): per node the pDSM allocator and redo
// logs, then the pDKVS index (kvs/verify.ts) and the pDFS tree and link counts (fs/verify.ts), then a
// cross-check of what the pools hold against what the structures reference (leaks, double owners).
//
//   online   the nodes answer: we are one more client (role 'check'). Concurrent writers can make a
//            pass see a structure mid-change, so a part that finds problems runs again after a pause,
//            and only problems seen by every pass are reported.
//   offline  no node answers: each pool is copied (never written), its allocator and logs verified,
//            and in-process node daemons serve the copies (replaying the logs as a real start would)
//            for the KV and FS checks; the copies are deleted at the end. A cluster where some nodes
//            answer and others do not is refused: its state cannot be judged from either side.
//   --repair fixes only what it can prove, one pDSM transaction per fix, and says what it did:
//            orphans of dead mounts (fs/orphans.ts) and wrong link counts (offline, or with no mount
//            connected). Offline it runs on the real pools, with daemons that hold their flocks.
//
// Exit status: 0 clean, 1 problems found (also after repair, for what remains), 3 could not check.

import fs from 'node:fs';
import path from 'node:path';
import type { Argv } from 'yargs';
import { mountLiveness, parseOrphanName, verifyFileSystem, FileSystem, type FsVerifyResult, type LinkCountProblem } from '../../fs';
import { verifyKvStores, type KvVerifyResult } from '../../kvs';
import { lockFile } from '../../native';
import {
  checkPoolFile, ClusterClient, DpmsError, formatBytes, isDpmsError, NodeDaemon, nodeOf, offsetOf, verifyPool,
  type ClusterConfig, type GlobalAddress, type NodeConfig,
} from '../../pdsm';
import { freePort } from './local-cluster';
import { startProgress, type Progress } from './progress';
import { EXIT, run } from './run';
import { resolveTarget } from './state-dir';

export interface NodePart {
  readonly id: number;
  readonly pool: string;
  /** What the node says (online) or what verifying its pool found (offline). */
  readonly summary: string;
  readonly problems: string[];
}

export interface ClusterCheckReport {
  readonly cluster: string;
  readonly mode: 'online' | 'offline';
  readonly repair: boolean;
  readonly nodes: NodePart[];
  readonly kv: { readonly summary: string; readonly problems: string[] };
  readonly fs: { readonly summary: string; readonly problems: string[] };
  /** Objects allocated in the pools that no structure references: a warning, not a problem. */
  readonly leaks: { readonly objects: number; readonly bytes: number; readonly first: string[]; readonly approximate: boolean };
  /** Cross-layer problems (an object owned by both the KV store and the file system). */
  readonly cross: string[];
  readonly repairs: string[];
  readonly notRepaired: string[];
  /** Online: problems a pass saw that a later pass did not (writers were busy); not reported. */
  readonly transient: number;
  readonly notes: string[];
  readonly problems: number;
  readonly clean: boolean;
}

export interface ClusterCheckOptions {
  readonly config: ClusterConfig;
  readonly repair?: boolean;
  readonly progress?: 'auto' | 'plain' | 'quiet';
  /** Where offline copies go (default: /dev/shm when it has room, else beside each pool). */
  readonly scratchDir?: string;
  /** Pause before an online part runs again (ms). */
  readonly recheckPauseMs?: number;
}

const FIRST_LEAKS = 5;
const RECHECK_PASSES = 3;
const CONNECT_TIMEOUT_MS = 2000;
const SETTLE_TIMEOUT_MS = 10_000;
/** A copy needs the pool's size plus this much room left over on its file system. */
const SPACE_MARGIN_BYTES = 16 * 1024 * 1024;

export function registerCheckCommand(yargs: Argv): Argv {
  return yargs.command('check [pool]',
    'check one pool file read-only, or a whole cluster (online when its nodes run, offline otherwise); exit 0 clean, 1 problems, 3 could not check',
    (y) => y
      .positional('pool', { type: 'string', describe: 'one pool file, checked alone (read-only); without it the cluster is checked' })
      .option('node', { type: 'number', describe: 'expected node id (with POOL)' })
      .option('dir', { type: 'string', describe: 'state directory of dpms up: the config is DIR/cluster.yaml (default ./.dpms)' })
      .option('config', { type: 'string', describe: 'cluster config file (instead of --dir)' })
      .option('repair', { type: 'boolean', default: false, describe: 'fix what can be proven (orphans of dead mounts, link counts) and say what was done' })
      .option('json', { type: 'boolean', default: false }),
    (argv) => run(async () => {
      if (argv.pool !== undefined) {
        if (argv.dir !== undefined || argv.config !== undefined || argv.repair) {
          throw new DpmsError('DPMS_INVALID_ARGUMENT', 'a POOL is checked alone: --dir, --config and --repair are for a whole cluster');
        }
        return checkOnePool(argv.pool, argv.node, argv.json);
      }
      if (argv.node !== undefined) throw new DpmsError('DPMS_INVALID_ARGUMENT', '--node goes with a POOL');
      const { config } = resolveTarget({ dir: argv.dir, config: argv.config });
      const report = await checkCluster({ config, repair: argv.repair, progress: argv.json ? 'quiet' : 'auto' });
      if (argv.json) console.log(JSON.stringify(report, null, 2));
      else printReport(report);
      return report.clean ? EXIT.ok : EXIT.problems;
    }));
}

/** Today's single-pool check: recover a private copy and verify it; output and exit statuses unchanged. */
function checkOnePool(pool: string, nodeId: number | undefined, json: boolean): number {
  const report = checkPoolFile(pool, nodeId);
  if (json) {
    console.log(JSON.stringify(report, null, 2));
  } else {
    console.log(`check ${pool}: ${report.clean ? 'clean' : `${report.errors.length} problem(s)`}`);
    console.log(`  log: ${report.pendingLogs} committed transaction(s) to replay, ${report.tornLogs} torn log(s) to discard at the next open, ${report.inDoubt} distributed transaction(s) in doubt (resolved by dpms node start)`);
    console.log(`  heap: ${report.chunksUsed}/${report.info.layout.chunkCount} chunks used (${report.emptyChunks} empty), ${report.objects} objects, ${formatBytes(report.objectBytes)}`);
    for (const error of report.errors) console.log(`  error: ${error}`);
  }
  return report.clean ? EXIT.ok : EXIT.problems;
}

function printReport(report: ClusterCheckReport): void {
  console.log(`dpms check: cluster '${report.cluster}', ${report.nodes.length} node(s), ${report.mode}${report.repair ? ', repair' : ''}`);
  const mark = (problems: readonly string[]): string => (problems.length === 0 ? 'clean' : `${problems.length} problem(s)`);
  for (const node of report.nodes) {
    console.log(`pDSM node ${node.id}: ${mark(node.problems)}; ${node.summary}`);
    for (const problem of node.problems) console.log(`  problem: ${problem}`);
  }
  console.log(`KV: ${mark(report.kv.problems)}; ${report.kv.summary}`);
  for (const problem of report.kv.problems) console.log(`  problem: ${problem}`);
  console.log(`FS: ${mark(report.fs.problems)}; ${report.fs.summary}`);
  for (const problem of report.fs.problems) console.log(`  problem: ${problem}`);
  for (const problem of report.cross) console.log(`cross-check: problem: ${problem}`);
  const { leaks } = report;
  if (leaks.objects > 0) {
    console.log(`leaks: warning: ${leaks.approximate ? 'about ' : ''}${leaks.objects} object(s)${leaks.approximate ? '' : ` (${formatBytes(leaks.bytes)})`} allocated but referenced by no structure` +
      `${leaks.first.length > 0 ? ` (first: ${leaks.first.join(', ')})` : ''}${report.mode === 'online' ? '; live clients and transactions in flight hold some legitimately' : ''}`);
  } else {
    console.log('leaks: none');
  }
  for (const repair of report.repairs) console.log(`repaired: ${repair}`);
  for (const item of report.notRepaired) console.log(`not repaired: ${item}`);
  for (const note of report.notes) console.log(`note: ${note}`);
  if (report.transient > 0) console.log(`note: ${report.transient} finding(s) of a busy pass did not persist on re-check (online) and are not reported`);
  console.log(report.clean ? 'result: clean' : `result: ${report.problems} problem(s)${report.mode === 'online' ? ' (online: each seen by every pass)' : ''}`);
}

// ---- the cluster check ----

type Mode = { kind: 'online'; client: ClusterClient } | { kind: 'offline' };

/** Check a cluster; throws DpmsError when it cannot be checked (a half-running cluster, no space for copies, ...). */
export async function checkCluster(options: ClusterCheckOptions): Promise<ClusterCheckReport> {
  const config = options.config;
  const mode = await probe(config);
  const progress = startProgress({ label: 'dpms check', total: config.nodes.length + 3, unit: 'parts', mode: options.progress ?? 'auto' });
  try {
    if (mode.kind === 'online') {
      try {
        return await checkOnline(config, mode.client, options, progress);
      } finally {
        await mode.client.close();
      }
    }
    return await checkOffline(config, options, progress);
  } finally {
    progress.stop();
  }
}

/** Online when every node answers, offline when none does; anything between is refused. */
async function probe(config: ClusterConfig): Promise<Mode> {
  let client: ClusterClient;
  try {
    client = await ClusterClient.connect({ config, info: { role: 'check' }, connectTimeoutMs: CONNECT_TIMEOUT_MS, lanesPerNode: 1 });
  } catch (error) {
    if (isDpmsError(error) && ['DPMS_UNREACHABLE', 'DPMS_TIMEOUT', 'DPMS_DISCONNECTED', 'DPMS_IO'].includes(error.code)) return { kind: 'offline' };
    throw error;
  }
  const rows = await client.status();
  const down = rows.filter((row) => !row.status);
  if (down.length > 0) {
    await client.close();
    const up = rows.filter((row) => row.status).map((row) => row.node.id);
    throw new DpmsError('DPMS_UNREACHABLE', `node(s) ${down.map((row) => row.node.id).join(', ')} do not answer while node(s) ${up.join(', ')} do ` +
      `(${down.map((row) => row.error).join('; ')}): a half-running cluster cannot be checked; start the missing nodes, or stop them all for an offline check`);
  }
  return { kind: 'online', client };
}

interface Findings {
  kv: KvVerifyResult | undefined;
  kvProblems: string[];
  fs: FsVerifyResult | undefined;
  fsProblems: string[];
  fsSummary: string;
  cross: string[];
  transient: number;
}

/**
 * Run one part; online, when it finds problems, run it again after a pause (up to RECHECK_PASSES
 * passes) and keep only the problems every pass saw.
 */
async function persistent<T extends { problems: string[] }>(online: boolean, pauseMs: number, pass: () => Promise<T>): Promise<{ result: T; problems: string[]; transient: number }> {
  let result = await pass();
  let problems = result.problems;
  let transient = 0;
  for (let round = 1; online && problems.length > 0 && round < RECHECK_PASSES; round++) {
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
    result = await pass();
    const again = new Set(result.problems);
    const kept = problems.filter((problem) => again.has(problem));
    transient += problems.length - kept.length;
    problems = kept;
  }
  return { result, problems, transient };
}

async function checkStructures(client: ClusterClient, online: boolean, pauseMs: number, progress: Progress): Promise<Findings> {
  progress.increment(0, 'KV');
  const kv = await persistent(online, pauseMs, () => verifyKvStores(client, { pin: online }));
  progress.increment(1, 'FS');
  let fsResult: FsVerifyResult | undefined;
  let fsProblems: string[] = [];
  let fsSummary: string;
  let transient = kv.transient;
  try {
    const checked = await persistent(online, pauseMs, () => verifyFileSystem(client));
    fsResult = checked.result;
    fsProblems = checked.problems;
    transient += checked.transient;
    fsSummary = fsText(fsResult);
  } catch (error) {
    if (!(isDpmsError(error) && (error as { detail?: string }).detail === 'DPMS_NOT_FOUND')) throw error;
    fsSummary = 'no file system in this cluster';
  }
  progress.increment(1, 'cross-check');
  let cross = crossOwners(kv.result, fsResult);
  if (online && cross.length > 0) {
    // Both walks ran at different moments: an object freed by one layer and reused by the other shows in both.
    const again = await persistent(false, 0, async () => ({ problems: crossOwners(await verifyKvStores(client), fsResult === undefined ? undefined : await verifyFileSystem(client)) }));
    const kept = cross.filter((problem) => again.problems.includes(problem));
    transient += cross.length - kept.length;
    cross = kept;
  }
  return { kv: kv.result, kvProblems: kv.problems, fs: fsResult, fsProblems, fsSummary, cross, transient };
}

function crossOwners(kv: KvVerifyResult, fsResult: FsVerifyResult | undefined): string[] {
  if (fsResult === undefined) return [];
  const both: string[] = [];
  for (const address of kv.addresses) if (fsResult.addresses.has(address)) both.push(`object ${addressText(address)} is used by the KV store and by the file system`);
  return both.slice(0, 100);
}

const addressText = (address: GlobalAddress): string => `${nodeOf(address)}:0x${offsetOf(address).toString(16)}`;

const kvText = (kv: KvVerifyResult): string => `${kv.stores} store(s), ${kv.keys} key(s), ${kv.nodes} tree node(s), ${kv.objects} object(s), ${kv.garbage} awaiting reclamation`;

const fsText = (result: FsVerifyResult): string =>
  `${result.directories} director${result.directories === 1 ? 'y' : 'ies'}, ${result.files} file(s), ${result.symlinks} symlink(s), ${result.orphans} orphan(s), ` +
  `${formatBytes(result.dataBytes)} of blocks, ${result.objects} object(s)`;

/** Orphans that are reclaimable, as problems (`dead`: whether an open- orphan's mount is gone). */
function orphanProblems(result: FsVerifyResult | undefined, dead: (instance: string | undefined) => boolean): Array<{ text: string; name: string; ino: number }> {
  const found: Array<{ text: string; name: string; ino: number }> = [];
  for (const entry of result?.orphanEntries ?? []) {
    const parsed = parseOrphanName(entry.name);
    if (!parsed) {
      found.push({ text: `(orphans)/${entry.name}: a name no mount writes`, name: entry.name, ino: entry.ino });
    } else if (parsed.kind === 'gone') {
      found.push({ text: `(orphans)/${entry.name}: a deletion left unfinished (repairable: --repair, or the next mount)`, name: entry.name, ino: entry.ino });
    } else if (dead(parsed.instance)) {
      found.push({ text: `(orphans)/${entry.name}: unlinked while open in a mount that is gone (repairable: --repair, or the next mount)`, name: entry.name, ino: entry.ino });
    }
  }
  return found;
}

async function checkOnline(config: ClusterConfig, client: ClusterClient, options: ClusterCheckOptions, progress: Progress): Promise<ClusterCheckReport> {
  const pauseMs = options.recheckPauseMs ?? 500;
  const rows = await client.status();
  const nodes: NodePart[] = rows.map((row) => {
    const status = row.status!;
    const problems: string[] = [];
    if (status.cluster !== config.name) problems.push(`serves cluster '${status.cluster}', not '${config.name}'`);
    progress.increment(1, `node ${row.node.id}`);
    return {
      id: row.node.id, pool: row.node.pool, problems,
      summary: `${status.chunksUsed}/${status.chunkCount} chunks used, ${status.objects} objects, ${status.sessions} client session(s), ` +
        `${status.lanesFree} free log lanes, ${status.inDoubt} in doubt, ${status.unconfirmed} unconfirmed (online: the node's counts; ` +
        'its allocator metadata and logs are verified by an offline check)',
    };
  });
  let findings = await checkStructures(client, true, pauseMs, progress);
  const notes: string[] = [];
  const repairs: string[] = [];
  const notRepaired: string[] = [];
  const instances = (findings.fs?.orphanEntries ?? []).flatMap((entry) => {
    const parsed = parseOrphanName(entry.name);
    return parsed?.kind === 'open' && parsed.instance !== undefined ? [parsed.instance] : [];
  });
  const liveness = await mountLiveness(client, instances);
  const legacyDead = liveness.otherMounts === 0 && liveness.nodesAnswered > 0;
  const dead = (instance: string | undefined): boolean => (instance === undefined ? legacyDead : liveness.isDead(instance));
  if (options.repair && findings.fs !== undefined) {
    const filesystem = await FileSystem.open(client, { create: false });
    for (const { name, ino } of await filesystem.reclaimOrphans({ isDead: (instance) => liveness.isDead(instance), legacyOpen: legacyDead })) {
      repairs.push(`FS: reclaimed orphan ${name} (inode ${ino})`);
    }
    if (liveness.otherMounts > 0) {
      for (const wrong of persistentLinks(findings)) {
        notRepaired.push(`FS: ${wrong.path}: nlink ${wrong.nlink} (counted ${wrong.expected}): ${liveness.otherMounts} mount(s) connected; unmount them or check offline to repair link counts`);
      }
    } else {
      await repairLinks(filesystem, findings, repairs);
    }
    await filesystem.close();
    if (repairs.length > 0) findings = await checkStructures(client, true, pauseMs, progress);
  }
  if (options.repair) for (const problem of findings.kvProblems) notRepaired.push(`KV: ${problem} (pDKVS damage is reported, never changed)`);
  // Leaks online: allocated objects per node (its count) against what the structures reference there.
  const referenced = new Map<number, number>();
  for (const address of [...(findings.kv?.addresses ?? []), ...(findings.fs?.addresses ?? [])]) referenced.set(nodeOf(address), (referenced.get(nodeOf(address)) ?? 0) + 1);
  let unreferenced = 0;
  for (const row of rows) unreferenced += Math.max(0, row.status!.objects - (referenced.get(row.node.id) ?? 0));
  progress.increment(1, 'done');
  return finish(config, 'online', options, nodes, findings, { objects: unreferenced, bytes: 0, first: [], approximate: true }, repairs, notRepaired, notes, dead);
}

/** Wrong link counts that every pass saw (the verifier's texts name the path and the count). */
function persistentLinks(findings: Findings): LinkCountProblem[] {
  return (findings.fs?.linkCounts ?? []).filter((wrong) => findings.fsProblems.some((problem) => problem.startsWith(`${wrong.path}: nlink ${wrong.nlink},`)));
}

async function repairLinks(filesystem: FileSystem, findings: Findings, repairs: string[]): Promise<void> {
  for (const wrong of persistentLinks(findings)) {
    const fixed = await filesystem.repairLinkCount(wrong.ino, wrong.nlink, wrong.expected);
    repairs.push(fixed
      ? `FS: ${wrong.path} (inode ${wrong.ino}): nlink ${wrong.nlink} set to the counted ${wrong.expected}`
      : `FS: ${wrong.path} (inode ${wrong.ino}): nlink changed since the check; left alone`);
  }
}

function finish(
  config: ClusterConfig, mode: 'online' | 'offline', options: ClusterCheckOptions, nodes: NodePart[], findings: Findings,
  leaks: ClusterCheckReport['leaks'], repairs: string[], notRepaired: string[], notes: string[], dead: (instance: string | undefined) => boolean,
): ClusterCheckReport {
  const orphans = orphanProblems(findings.fs, dead).map((orphan) => orphan.text);
  const fsProblems = [...findings.fsProblems, ...orphans];
  const kv = { summary: findings.kv === undefined ? 'not checked' : kvText(findings.kv), problems: findings.kvProblems };
  const fsPart = { summary: findings.fsSummary, problems: fsProblems };
  const problems = nodes.reduce((sum, node) => sum + node.problems.length, 0) + kv.problems.length + fsProblems.length + findings.cross.length;
  return {
    cluster: config.name, mode, repair: options.repair === true, nodes, kv, fs: fsPart, leaks, cross: findings.cross,
    repairs, notRepaired, transient: findings.transient, notes, problems, clean: problems === 0,
  };
}

// ---- offline ----

interface Copy {
  readonly node: NodeConfig;
  readonly path: string;
}

async function checkOffline(config: ClusterConfig, options: ClusterCheckOptions, progress: Progress): Promise<ClusterCheckReport> {
  const repair = options.repair === true;
  for (const node of config.nodes) {
    if (!fs.existsSync(node.pool)) throw new DpmsError('DPMS_NOT_FOUND', `node ${node.id}'s pool ${node.pool} does not exist (nothing to check)`);
  }
  // Repair works on the real pools: the daemons take their flocks, so it cannot run beside live nodes.
  // A check works on copies, made while we hold the flocks so that no node starts mid-copy.
  let scratch: string | undefined;
  const copies: Copy[] = [];
  const notes: string[] = [];
  try {
    if (!repair) {
      scratch = makeScratch(config, options.scratchDir);
      const locks = config.nodes.map((node) => ({ node, lock: lockFile(node.pool) }));
      try {
        const busy = locks.filter((entry) => entry.lock === null);
        if (busy.length > 0) {
          throw new DpmsError('DPMS_BUSY', `the pool(s) of node(s) ${busy.map((entry) => entry.node.id).join(', ')} are held by a running process that does not answer; ` +
            'stop it (or wait for it to finish starting) and check again');
        }
        for (const node of config.nodes) {
          const copy = path.join(scratch, `node-${node.id}.pool`);
          fs.copyFileSync(node.pool, copy);
          copies.push({ node, path: copy });
        }
      } finally {
        for (const entry of locks) entry.lock?.release();
      }
    } else {
      for (const node of config.nodes) copies.push({ node, path: node.pool });
    }

    // Each pool's allocator and logs, as an open would find them (checkPoolFile recovers a private in-memory copy).
    const nodes: NodePart[] = [];
    for (const { node, path: file } of copies) {
      progress.update(nodes.length, `node ${node.id}`);
      const pool = checkPoolFile(file, node.id);
      nodes.push({
        id: node.id, pool: node.pool, problems: [...pool.errors],
        summary: `${pool.chunksUsed}/${pool.info.layout.chunkCount} chunks used (${pool.emptyChunks} empty), ${pool.objects} objects, ${formatBytes(pool.objectBytes)}; ` +
          `logs: ${pool.pendingLogs} committed to replay, ${pool.tornLogs} torn to discard, ${pool.inDoubt} in doubt`,
      });
    }
    progress.update(nodes.length, 'starting nodes');

    // Serve the copies (or, to repair, the pools) with in-process daemons on free ports: starting them
    // replays the logs exactly as `dpms node start` would.
    const served: ClusterConfig = {
      ...config,
      nodes: await Promise.all(copies.map(async ({ node, path: file }) => ({ ...node, host: '127.0.0.1', port: await freePort(), pool: file }))),
    };
    const daemons: NodeDaemon[] = [];
    let client: ClusterClient | undefined;
    try {
      for (const node of served.nodes) daemons.push(await NodeDaemon.start({ config: served, nodeId: node.id }));
      client = await ClusterClient.connect({ config: served, info: { role: 'check' }, connectTimeoutMs: CONNECT_TIMEOUT_MS, lanesPerNode: 1 });
      if (!(await settle(client))) notes.push(`distributed transactions were still in doubt after ${SETTLE_TIMEOUT_MS / 1000} s; the structures were checked anyway`);

      let findings = await checkStructures(client, false, 0, progress);
      const repairs: string[] = [];
      const notRepaired: string[] = [];
      if (repair && findings.fs !== undefined) {
        const filesystem = await FileSystem.open(client, { create: false });
        // Offline no mount runs: every open- orphan's mount is gone.
        for (const { name, ino } of await filesystem.reclaimOrphans({ isDead: () => true, legacyOpen: true })) {
          repairs.push(`FS: reclaimed orphan ${name} (inode ${ino})`);
        }
        await repairLinks(filesystem, findings, repairs);
        await filesystem.close();
        if (repairs.length > 0) findings = await checkStructures(client, false, 0, progress);
      }
      if (repair) for (const problem of findings.kvProblems) notRepaired.push(`KV: ${problem} (pDKVS damage is reported, never changed)`);

      // Leaks: every live object of the served pools (after log replay) that nothing references.
      const referenced = new Set<GlobalAddress>([...(findings.kv?.addresses ?? []), ...(findings.fs?.addresses ?? [])]);
      const leaks = { objects: 0, bytes: 0, first: [] as string[], approximate: false };
      for (const daemon of daemons) {
        verifyPool(daemon.pool.pm.buffer, daemon.pool.info, (object) => {
          if (referenced.has(object.address)) return;
          leaks.objects++;
          leaks.bytes += object.sizeBytes;
          if (leaks.first.length < FIRST_LEAKS) leaks.first.push(`${addressText(object.address)} (${object.sizeBytes} B)`);
        });
      }
      progress.update(config.nodes.length + 3, 'done');
      return finish(config, 'offline', options, nodes, findings, leaks, repairs, notRepaired, notes, () => true);
    } finally {
      await client?.close();
      for (const daemon of daemons) await daemon.stop();
    }
  } finally {
    for (const copy of copies) if (copy.path !== copy.node.pool) fs.rmSync(copy.path, { force: true });
    if (scratch !== undefined) fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** A directory for the copies: /dev/shm when it has room for all of them, else beside the first pool. */
function makeScratch(config: ClusterConfig, preferred: string | undefined): string {
  const needed = config.nodes.reduce((sum, node) => sum + fs.statSync(node.pool).size, 0) + SPACE_MARGIN_BYTES;
  const candidates = preferred !== undefined ? [preferred] : [...(fs.existsSync('/dev/shm') ? ['/dev/shm'] : []), path.dirname(config.nodes[0].pool)];
  const tried: string[] = [];
  for (const dir of candidates) {
    let free: number;
    try {
      const stats = fs.statfsSync(dir);
      free = stats.bavail * stats.bsize;
    } catch (error) {
      tried.push(`${dir}: ${(error as Error).message}`);
      continue;
    }
    if (free < needed) {
      tried.push(`${dir} has ${formatBytes(free)} free`);
      continue;
    }
    return fs.mkdtempSync(path.join(dir, 'dpms-check-'));
  }
  throw new DpmsError('DPMS_NO_SPACE', `an offline check copies the pools (${formatBytes(needed)} with margin) and none of the places fits them (${tried.join('; ')}); ` +
    'free some space, or stop nothing and run the check online');
}

/** Wait until the served nodes have resolved their in-doubt transactions (false when they did not in time). */
async function settle(client: ClusterClient): Promise<boolean> {
  const deadline = Date.now() + SETTLE_TIMEOUT_MS;
  for (;;) {
    const rows = await client.status();
    if (rows.every((row) => row.status && row.status.inDoubt === 0 && row.status.unconfirmed === 0)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
