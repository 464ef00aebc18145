// A worker process of `dpms bench fs`'s metadata benchmark (bench-fs.ts forks 1..N of them): for
// each request it runs one phase (create, stat or unlink) over its share of the files (file i belongs
// to worker i mod N) with synchronous fs calls, and replies with when the phase began and ended
// (process.hrtime, CLOCK_MONOTONIC: comparable across processes) and each operation's latency.
// Synchronous calls cost least per operation, so the workers measure the file system rather than
// libuv's thread pool; they are safe here because a worker never serves a FUSE mount itself.

import fs from 'node:fs';

export const METADATA_PHASES = ['create', 'stat', 'unlink'] as const;
export type MetadataPhase = typeof METADATA_PHASES[number];

export interface MetadataRequest {
  readonly phase: MetadataPhase;
  readonly dir: string;
  readonly files: number;
  readonly fileBytes: number;
  readonly worker: number;
  readonly workers: number;
}

export type MetadataReply =
  | { readonly type: 'ready' }
  | { readonly type: 'done'; readonly startNs: bigint; readonly endNs: bigint; readonly latenciesNs: Float64Array }
  | { readonly type: 'failed'; readonly message: string };

const CREATE_FLAGS = fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY;

export function fileName(dir: string, index: number): string {
  return `${dir}/f${index}`;
}

function runPhase(request: MetadataRequest): MetadataReply {
  const data = Buffer.alloc(request.fileBytes, 0x61);
  const count = Math.max(0, Math.ceil((request.files - request.worker) / request.workers));
  const latenciesNs = new Float64Array(count);
  const startNs = process.hrtime.bigint();
  let lastNs = startNs;
  let done = 0;
  for (let index = request.worker; index < request.files; index += request.workers) {
    const file = fileName(request.dir, index);
    switch (request.phase) {
      case 'create': {
        const fd = fs.openSync(file, CREATE_FLAGS, 0o644);
        try {
          const written = fs.writeSync(fd, data);
          if (written !== data.length) throw new Error(`${file}: wrote ${written} of ${data.length} bytes`);
        } finally {
          fs.closeSync(fd);
        }
        break;
      }
      case 'stat':
        if (fs.statSync(file).size !== request.fileBytes) throw new Error(`${file}: stat says ${fs.statSync(file).size} bytes, not ${request.fileBytes}`);
        break;
      case 'unlink':
        fs.unlinkSync(file);
        break;
    }
    const nowNs = process.hrtime.bigint();
    latenciesNs[done++] = Number(nowNs - lastNs);
    lastNs = nowNs;
  }
  return { type: 'done', startNs, endNs: lastNs, latenciesNs };
}

function main(): void {
  const send = (reply: MetadataReply): void => {
    process.send!(reply);
  };
  process.on('message', (request: MetadataRequest) => {
    try {
      send(runPhase(request));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      send({ type: 'failed', message: `${request.phase}: ${code ? `${code}: ` : ''}${(error as Error).message}` });
    }
  });
  // The parent closes the channel when it is done with this worker (or is gone).
  process.on('disconnect', () => process.exit(0));
  send({ type: 'ready' });
}

if (require.main === module) main();
