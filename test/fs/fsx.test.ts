// Proves, in the style of fsx, that file data seen through the kernel matches a simple in-memory model:
// ~1,500 random pwrites (holes far past EOF, writes across pDFS's 1-MiB block boundaries), preads at
// random offsets and sizes (short past EOF), ftruncate up and down, O_APPEND writes through a second
// handle, close and reopen, fstat sizes, on 3 files at once, each compared byte for byte; then that a
// write at 64 GiB - 1 makes a sparse 64-GiB file that owns almost nothing, and that a > 4-MiB file
// written in 1-MiB writes hashes the same in a child process (sha256sum) as in the model.
//
// Runs against a real `dpms mount` of a 3-node cluster. DPMS_FS_TARGET=tmpfs runs the same steps on a
// tmpfs directory instead (the kernel's own file system is the reference). The seed is printed;
// DPMS_SEED=<seed> replays the same operations. A mismatch prints the last 20 operations on that file
// and overall, and the first differing file offset.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runOk, startFsTarget, type FsTarget } from '../support/fs-target';
import { Random, testSeed } from '../support/random';

const KiB = 1024;
const MiB = 1024 * 1024;
/** pDFS cuts file data into blocks of this size (fs/format.ts FS_LIMITS.blockBytes): edges to aim at. */
const BLOCK_BYTES = MiB;
const FILES = 3;
const OPERATIONS = 1500;
/** Files stay below 8 blocks, so holes, boundaries and whole-file compares stay cheap. */
const MAX_FILE_BYTES = 8 * MiB;
const MAX_IO_BYTES = 300 * KiB;
const LOG_KEPT = 200;
const LOG_SHOWN = 20;

const hex = (value: number): string => `0x${value.toString(16)}`;

/**
 * The bytes an operation writes: a function of the file offset (period 251, prime, so data moved by a
 * page, a block or any power of two never matches) and of the operation's number, so stale data from
 * an older write of the same range does not match either.
 */
function pattern(length: number, fileOffset: number, tag: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  let phase = fileOffset % 251;
  const base = (tag * 37) & 0xff;
  for (let i = 0; i < length; i++) {
    bytes[i] = (base + phase) & 0xff;
    if (++phase === 251) phase = 0;
  }
  return bytes;
}

/** One file under test: its model (bytes past `size` are always zero) and its open handles. */
interface ModelFile {
  readonly name: string;
  readonly path: string;
  readonly data: Buffer;
  size: number;
  handle: fs.promises.FileHandle;
  appendHandle: fs.promises.FileHandle | undefined;
  readonly log: string[];
}

function firstDifference(expected: Buffer, got: Buffer): number {
  const length = Math.min(expected.length, got.length);
  for (let i = 0; i < length; i++) if (expected[i] !== got[i]) return i;
  return length;
}

describe('fsx: random file operations through the kernel checked against a model', () => {
  let target: FsTarget;
  before(async () => {
    target = await startFsTarget();
  });
  after(async () => {
    await target?.stop();
  });

  test(`${OPERATIONS} random writes, reads, truncates, appends and reopens on ${FILES} files`, async () => {
    const seed = testSeed('fsx');
    const random = new Random(seed);
    const globalLog: string[] = [];
    let operation = 0;

    const files: ModelFile[] = [];
    for (let i = 0; i < FILES; i++) {
      const name = `fsx-${i}`;
      const filePath = path.join(target.dir, name);
      files.push({ name, path: filePath, data: Buffer.alloc(MAX_FILE_BYTES), size: 0, handle: await fs.promises.open(filePath, 'w+'), appendHandle: undefined, log: [] });
    }

    const record = (file: ModelFile, text: string): void => {
      const line = `#${operation} ${file.name} ${text}`;
      file.log.push(line);
      globalLog.push(line);
      if (file.log.length > LOG_KEPT) file.log.splice(0, file.log.length - LOG_KEPT);
      if (globalLog.length > LOG_KEPT) globalLog.splice(0, globalLog.length - LOG_KEPT);
    };
    const failure = (file: ModelFile, what: string): string =>
      `fsx mismatch (seed ${seed}, replay with DPMS_SEED=${seed}) at operation #${operation} on ${file.name}: ${what}\n` +
      `last ${LOG_SHOWN} operations on ${file.name}:\n  ${file.log.slice(-LOG_SHOWN).join('\n  ')}\n` +
      `last ${LOG_SHOWN} operations overall:\n  ${globalLog.slice(-LOG_SHOWN).join('\n  ')}`;
    const fail = (file: ModelFile, what: string): never => assert.fail(failure(file, what));
    /** Compares bytes read at `fileOffset` with the model, reporting the first differing file offset. */
    const check = (file: ModelFile, what: string, fileOffset: number, got: Buffer, requested: number): void => {
      const expectedLength = Math.max(0, Math.min(requested, file.size - fileOffset));
      const expected = file.data.subarray(fileOffset, fileOffset + expectedLength);
      if (got.length === expectedLength && got.equals(expected)) return;
      const at = firstDifference(expected, got);
      const detail = at < Math.min(expected.length, got.length)
        ? `expected ${hex(expected[at])}, got ${hex(got[at])}`
        : `expected ${expectedLength} bytes (file size ${hex(file.size)}), got ${got.length}`;
      fail(file, `${what} off=${hex(fileOffset)} len=${hex(requested)}: first differing byte at file offset ${fileOffset + at} (${hex(fileOffset + at)}, block ${Math.floor((fileOffset + at) / BLOCK_BYTES)}): ${detail}`);
    };

    const boundary = (): number => (1 + random.int(MAX_FILE_BYTES / BLOCK_BYTES - 1)) * BLOCK_BYTES;
    const ioLength = (): number => {
      const kind = random.int(100);
      if (kind < 20) return 1 + random.int(16);
      if (kind < 45) return 1 + random.int(4 * KiB);
      return 1 + random.int(MAX_IO_BYTES);
    };
    const clampOffset = (offset: number, length: number): number => Math.max(0, Math.min(offset, MAX_FILE_BYTES - length));
    const writeOffset = (file: ModelFile, length: number): number => {
      const kind = random.int(100);
      if (kind < 35) {
        const edge = boundary();
        switch (random.int(4)) {
          case 0: return clampOffset(edge - 1 - random.int(Math.max(1, length - 1)), length); // crosses the edge
          case 1: return clampOffset(edge, length); // starts on it
          case 2: return clampOffset(edge - length, length); // ends on it
          default: return clampOffset(edge - 4 * KiB + random.int(8 * KiB), length);
        }
      }
      if (kind < 50) return clampOffset(file.size + 1 + random.int(3 * MiB), length); // leaves a hole
      return clampOffset(random.int(file.size + 1), length);
    };
    const readOffset = (file: ModelFile, length: number): number => {
      const kind = random.int(100);
      if (kind < 30) return Math.max(0, boundary() - 1 - random.int(Math.max(1, length - 1)));
      if (kind < 40) return Math.max(0, file.size - random.int(length + 1)); // ends at or past EOF: short
      if (kind < 45) return file.size + random.int(64 * KiB); // at or past EOF: nothing
      return random.int(file.size + 1);
    };
    const truncateSize = (file: ModelFile): number => {
      const kind = random.int(100);
      if (kind < 10) return 0;
      if (kind < 35) return random.int(file.size + 1);
      if (kind < 55) return Math.min(MAX_FILE_BYTES, file.size + 1 + random.int(2 * MiB));
      if (kind < 75) return boundary();
      return boundary() - 4 * KiB + random.int(8 * KiB);
    };

    const modelWrite = (file: ModelFile, offset: number, bytes: Buffer): void => {
      bytes.copy(file.data, offset);
      file.size = Math.max(file.size, offset + bytes.length);
    };
    const modelTruncate = (file: ModelFile, size: number): void => {
      if (size < file.size) file.data.fill(0, size, file.size);
      file.size = size;
    };

    const doWrite = async (file: ModelFile): Promise<void> => {
      const length = ioLength();
      const offset = writeOffset(file, length);
      const bytes = pattern(length, offset, operation);
      record(file, `pwrite off=${hex(offset)} len=${hex(length)} size ${hex(file.size)} -> ${hex(Math.max(file.size, offset + length))}`);
      const { bytesWritten } = await file.handle.write(bytes, 0, length, offset);
      if (bytesWritten !== length) fail(file, `pwrite wrote ${bytesWritten} of ${length} bytes`);
      modelWrite(file, offset, bytes);
    };
    const doRead = async (file: ModelFile): Promise<void> => {
      const length = ioLength();
      const offset = readOffset(file, length);
      record(file, `pread off=${hex(offset)} len=${hex(length)} size ${hex(file.size)}`);
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await file.handle.read(buffer, 0, length, offset);
      check(file, 'pread', offset, buffer.subarray(0, bytesRead), length);
    };
    const doTruncate = async (file: ModelFile): Promise<void> => {
      const size = truncateSize(file);
      const byPath = random.chance(0.25);
      record(file, `${byPath ? 'truncate' : 'ftruncate'} ${hex(file.size)} -> ${hex(size)}`);
      if (byPath) await fs.promises.truncate(file.path, size);
      else await file.handle.truncate(size);
      modelTruncate(file, size);
    };
    const doAppend = async (file: ModelFile): Promise<void> => {
      const length = Math.min(ioLength(), MAX_FILE_BYTES - file.size);
      if (length === 0) return doTruncate(file);
      const bytes = pattern(length, file.size, operation);
      record(file, `append len=${hex(length)} size ${hex(file.size)} -> ${hex(file.size + length)}`);
      file.appendHandle ??= await fs.promises.open(file.path, 'a');
      // No position: write(2), not pwrite(2); O_APPEND puts the bytes at the end.
      const { bytesWritten } = await file.appendHandle.write(bytes, 0, length);
      if (bytesWritten !== length) fail(file, `append wrote ${bytesWritten} of ${length} bytes`);
      modelWrite(file, file.size, bytes);
    };
    const doStat = async (file: ModelFile): Promise<void> => {
      const byPath = random.chance(0.5);
      record(file, `${byPath ? 'stat' : 'fstat'} size ${hex(file.size)}`);
      const stat = byPath ? await fs.promises.stat(file.path) : await file.handle.stat();
      if (stat.size !== file.size) fail(file, `${byPath ? 'stat' : 'fstat'} says size ${stat.size} (${hex(stat.size)}), the model ${file.size} (${hex(file.size)})`);
      if (!stat.isFile()) fail(file, `${byPath ? 'stat' : 'fstat'} says it is not a regular file (mode ${stat.mode.toString(8)})`);
    };
    /** Reads the whole file through the main handle in 1-MiB preads, then one at EOF that must return nothing. */
    const compareWhole = async (file: ModelFile, why: string): Promise<void> => {
      const chunk = Buffer.alloc(BLOCK_BYTES);
      for (let at = 0; at <= file.size; at += BLOCK_BYTES) {
        const { bytesRead } = await file.handle.read(chunk, 0, BLOCK_BYTES, at);
        check(file, `${why}: whole-file pread`, at, chunk.subarray(0, bytesRead), BLOCK_BYTES);
      }
    };
    const doReopen = async (file: ModelFile): Promise<void> => {
      const truncating = random.chance(0.1);
      record(file, `close, reopen ${truncating ? 'O_TRUNC' : 'r+'}, compare size ${hex(file.size)}`);
      await file.handle.close();
      await file.appendHandle?.close();
      file.appendHandle = undefined;
      file.handle = await fs.promises.open(file.path, truncating ? 'w+' : 'r+');
      if (truncating) modelTruncate(file, 0);
      await compareWhole(file, 'after reopen');
    };

    const operations: Array<[weight: number, run: (file: ModelFile) => Promise<void>]> = [
      [40, doWrite], [25, doRead], [8, doTruncate], [10, doAppend], [12, doStat], [5, doReopen],
    ];
    const totalWeight = operations.reduce((sum, [weight]) => sum + weight, 0);
    try {
      for (operation = 1; operation <= OPERATIONS; operation++) {
        const file = random.pick(files);
        let roll = random.int(totalWeight);
        const [, run] = operations.find(([weight]) => (roll -= weight) < 0)!;
        await run(file);
      }
      for (const file of files) {
        record(file, `final: fstat, whole-file compare, close, readFile size ${hex(file.size)}`);
        await doStat(file);
        await compareWhole(file, 'final');
        await file.handle.close();
        await file.appendHandle?.close();
        file.appendHandle = undefined;
        // A fresh open (close-to-open) and readFile: the bytes a new reader sees.
        const contents = await fs.promises.readFile(file.path);
        check(file, 'final readFile', 0, contents, MAX_FILE_BYTES);
      }
    } finally {
      for (const file of files) {
        await file.handle.close().catch(() => undefined);
        await file.appendHandle?.close().catch(() => undefined);
      }
    }
    const sizes = files.map((file) => file.size);
    console.log(`# fsx: ${OPERATIONS} operations, final sizes ${sizes.join(', ')}`);
    for (const file of files) await fs.promises.unlink(file.path);
    assert.deepEqual(await fs.promises.readdir(target.dir), [], 'the files are gone');
  });

  test('a write at 64 GiB - 1 makes a sparse 64-GiB file that reads zeros and owns little', async () => {
    const filePath = path.join(target.dir, 'sparse-64g');
    const handle = await fs.promises.open(filePath, 'w+');
    try {
      const size = 64 * 1024 ** 3;
      assert.equal((await handle.write(Buffer.from('Z'), 0, 1, size - 1)).bytesWritten, 1);
      const stat = await handle.stat();
      assert.equal(stat.size, size);
      // Far below 64 GiB: only the last block (and its map pages) exists.
      assert.ok(stat.blocks * 512 <= BLOCK_BYTES + 64 * KiB, `st_blocks ${stat.blocks} for a file with one written byte`);
      const middle = Buffer.alloc(256 * KiB, 0xee);
      // Across a block boundary in the middle of the hole.
      const { bytesRead } = await handle.read(middle, 0, middle.length, 32 * 1024 ** 3 - 100 * KiB);
      assert.equal(bytesRead, middle.length);
      assert.ok(middle.every((byte) => byte === 0), 'the hole reads as zeros');
      const tail = Buffer.alloc(100, 0xee);
      assert.equal((await handle.read(tail, 0, 100, size - 4)).bytesRead, 4, 'a read past EOF is short');
      assert.deepEqual([...tail.subarray(0, 4)], [0, 0, 0, 0x5a]);
      assert.equal((await handle.read(tail, 0, 100, size)).bytesRead, 0, 'nothing at EOF');
      await handle.truncate(0);
      const emptied = await handle.stat();
      assert.equal(emptied.size, 0);
      assert.equal(emptied.blocks, 0);
    } finally {
      await handle.close();
    }
    await fs.promises.unlink(filePath);
  });

  test('a > 4-MiB file written in 1-MiB writes hashes the same in sha256sum as in the model', async () => {
    const seed = testSeed('fsx sha256sum');
    const random = new Random(seed);
    const filePath = path.join(target.dir, 'hashed');
    const model = random.bytes(4 * MiB + 1 + random.int(MiB));
    const handle = await fs.promises.open(filePath, 'w');
    try {
      for (let at = 0; at < model.length; at += MiB) {
        const chunk = model.subarray(at, Math.min(model.length, at + MiB));
        assert.equal((await handle.write(chunk, 0, chunk.length, at)).bytesWritten, chunk.length);
      }
    } finally {
      await handle.close();
    }
    const expected = createHash('sha256').update(model).digest('hex');
    const output = await runOk('sha256sum', [filePath]);
    assert.equal(output.split(' ')[0], expected, `seed ${seed}: sha256sum of ${model.length} bytes`);
    assert.equal((await fs.promises.stat(filePath)).size, model.length);
    await fs.promises.unlink(filePath);
  });
});
