// A seeded fuzzer for servers that speak the tcp provider's wire format (docs/TCP-WIRE.md):
// random bytes, truncated frames, oversized length fields, valid headers with random fields, frames
// before the handshake, and an honest handshake followed by hostile frames (bad rkeys, bad regions,
// out-of-bounds and overflowing ranges, misaligned atomics, unknown opcodes, oversized messages).
// It uses node's `net` and a TypeScript encoding of the format written from the document, so it
// checks the native code against the spec rather than against itself. Also exported: the raw
// handshake and frame encoders, for tests that need to send one precise bad frame.
//
// The only memory a fuzzer frame may legitimately change is `writable` (writes and atomics with the
// right key go there and nowhere else), so a test can snapshot everything else and compare.

import crypto from 'node:crypto';
import net from 'node:net';

import { Random } from './random';

export const REQUEST_MAGIC = 0x5144;
export const RESPONSE_MAGIC = 0x5244;
export const VERSION = 1;
export const REQUEST_HEADER_BYTES = 32;
export const RESPONSE_HEADER_BYTES = 16;
export const MAX_DATA_BYTES = 16 << 20;

export const Op = {
  auth: 1,
  read: 2,
  write: 3,
  writeImm: 4,
  cas: 5,
  faa: 6,
  persist: 7,
  message: 8,
  hello: 0x81,
  welcome: 0x82,
} as const;

export interface RequestFields {
  readonly magic?: number;
  readonly version?: number;
  readonly opcode: number;
  readonly requestId?: number;
  readonly offset?: bigint;
  readonly length?: number;
  readonly rkey?: number;
  readonly region?: number;
  readonly flags?: number;
  readonly aux?: number;
}

/** A 32-byte request header (little-endian, layout of docs/TCP-WIRE.md). */
export function encodeRequest(f: RequestFields): Buffer {
  const b = Buffer.alloc(REQUEST_HEADER_BYTES);
  b.writeUInt16LE(f.magic ?? REQUEST_MAGIC, 0);
  b.writeUInt8(f.version ?? VERSION, 2);
  b.writeUInt8(f.opcode, 3);
  b.writeUInt32LE((f.requestId ?? 0) >>> 0, 4);
  b.writeBigUInt64LE(BigInt.asUintN(64, f.offset ?? 0n), 8);
  b.writeUInt32LE((f.length ?? 0) >>> 0, 16);
  b.writeUInt32LE((f.rkey ?? 0) >>> 0, 20);
  b.writeUInt16LE((f.region ?? 0) & 0xffff, 24);
  b.writeUInt16LE((f.flags ?? 0) & 0xffff, 26);
  b.writeUInt32LE((f.aux ?? 0) >>> 0, 28);
  return b;
}

export interface Welcome {
  readonly nodeId: number;
  readonly maxMessageBytes: number;
  readonly regions: readonly { readonly sizeBytes: number; readonly rkey: number }[];
}

/** Buffers a socket's input so that exact byte counts can be awaited. */
export class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: (() => void) | undefined;
  private ended = false;

  constructor(socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.waiter?.();
    });
    const end = (): void => {
      this.ended = true;
      this.waiter?.();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', () => undefined);
  }

  /** Exactly n bytes, or undefined when the stream ends (or timeoutMs passes) first. */
  async take(n: number, timeoutMs = 5000): Promise<Buffer | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered < n) {
      if (this.ended || Date.now() >= deadline) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    const all = Buffer.concat(this.chunks);
    this.chunks = [all.subarray(n)];
    this.buffered = all.length - n;
    return all.subarray(0, n);
  }

  /** Resolves once the peer has closed (true) or after timeoutMs (false). */
  async closed(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      if (Date.now() >= deadline) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
      // Drop what arrived meanwhile: callers of closed() do not read responses.
      this.chunks = [];
      this.buffered = 0;
    }
    return true;
  }
}

function hmac(secret: Uint8Array, label: string, first: Buffer, second: Buffer): Buffer {
  return crypto.createHmac('sha256', secret).update(label).update(first).update(second).digest();
}

/** Connect a raw socket (resolves once connected). */
export function rawConnect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Run the client side of the handshake on a raw socket; undefined when the server refuses. */
export async function rawHandshake(socket: net.Socket, reader: ByteReader, secret: Uint8Array, clientNonce: Buffer): Promise<Welcome | undefined> {
  const hello = await reader.take(RESPONSE_HEADER_BYTES + 32);
  if (hello === undefined || hello.readUInt16LE(0) !== RESPONSE_MAGIC || hello[3] !== Op.hello) return undefined;
  const serverNonce = hello.subarray(RESPONSE_HEADER_BYTES);
  const proof = hmac(secret, 'dpms-client', serverNonce, clientNonce);
  socket.write(Buffer.concat([encodeRequest({ opcode: Op.auth, length: 64 }), clientNonce, proof]));
  const header = await reader.take(RESPONSE_HEADER_BYTES);
  if (header === undefined || header[3] !== Op.welcome) return undefined;
  const body = await reader.take(header.readUInt32LE(8));
  if (body === undefined) return undefined;
  const expected = hmac(secret, 'dpms-server', clientNonce, serverNonce);
  if (!crypto.timingSafeEqual(expected, body.subarray(0, 32))) throw new Error('the server proof is wrong');
  const count = body.readUInt32LE(36);
  const regions = [];
  for (let i = 0; i < count; i++) {
    const at = 48 + i * 16;
    regions.push({ sizeBytes: Number(body.readBigUInt64LE(at)), rkey: body.readUInt32LE(at + 8) });
  }
  return { nodeId: body.readUInt32LE(32), maxMessageBytes: body.readUInt32LE(40), regions };
}

export interface FuzzOptions {
  readonly host: string;
  readonly port: number;
  readonly secret: Uint8Array;
  readonly seed: number;
  readonly connections: number;
  /** Frames per connection (the last hostile one usually makes the server close it). */
  readonly framesPerConnection: number;
  /** Where frames with the right key may write (writes, atomics); nothing else is written. */
  readonly writable?: { readonly region: number; readonly offset: number; readonly length: number };
  /** Connections run at once (default 8). */
  readonly parallel?: number;
}

export interface FuzzCounts {
  connections: number;
  frames: number;
  bytes: number;
  handshakes: number;
  /** Connections the server closed on its own before the fuzzer did. */
  closedByServer: number;
  /** Per scenario, how many connections ran it. */
  scenarios: Record<string, number>;
}

type Scenario = 'randomBytes' | 'noHandshake' | 'truncatedAuth' | 'wrongProof' | 'hostile' | 'randomHeaders' | 'truncatedFrame';
const SCENARIOS: readonly Scenario[] = ['randomBytes', 'noHandshake', 'truncatedAuth', 'wrongProof', 'hostile', 'hostile', 'randomHeaders', 'truncatedFrame'];

class Session {
  readonly frames: Buffer[] = [];
  constructor(
    readonly random: Random,
    readonly welcome: Welcome | undefined,
    readonly writable: FuzzOptions['writable'],
  ) {}

  private id(): number {
    return this.random.int(2 ** 32);
  }

  /** A frame the server must accept and that changes nothing outside `writable`. */
  benign(): Buffer {
    const w = this.welcome!;
    const region = this.random.int(w.regions.length);
    const { sizeBytes, rkey } = w.regions[region];
    const length = this.random.int(Math.min(sizeBytes, 4096) + 1);
    const offset = this.random.int(sizeBytes - length + 1);
    const kind = this.random.int(4);
    if (kind === 0) return encodeRequest({ opcode: Op.read, requestId: this.id(), offset: BigInt(offset), length, rkey, region });
    if (kind === 1) return encodeRequest({ opcode: Op.persist, requestId: this.id(), offset: BigInt(offset), length, rkey, region });
    const target = this.writable;
    if (target === undefined) return encodeRequest({ opcode: Op.read, requestId: this.id(), offset: 0n, length: 0, rkey, region });
    const targetKey = w.regions[target.region].rkey;
    if (kind === 2) {
      const n = this.random.int(Math.min(target.length, 2048) + 1);
      const at = target.offset + this.random.int(target.length - n + 1);
      const opcode = this.random.chance(0.5) ? Op.write : Op.writeImm;
      return Buffer.concat([
        encodeRequest({ opcode, requestId: this.id(), offset: BigInt(at), length: n, rkey: targetKey, region: target.region, aux: opcode === Op.writeImm ? this.id() : 0 }),
        this.random.bytes(n),
      ]);
    }
    const words = Math.floor(target.length / 8);
    const at = Math.ceil(target.offset / 8) * 8 + 8 * this.random.int(Math.max(1, words - 1));
    const cas = this.random.chance(0.5);
    return Buffer.concat([
      encodeRequest({ opcode: cas ? Op.cas : Op.faa, requestId: this.id(), offset: BigInt(at), length: 8, rkey: targetKey, region: target.region }),
      this.random.bytes(cas ? 16 : 8),
    ]);
  }

  /** A frame the server must refuse (status + close, or close). It never writes anything. */
  hostile(): Buffer {
    const w = this.welcome!;
    const region = this.random.int(w.regions.length);
    const { sizeBytes, rkey } = w.regions[region];
    const r = this.random;
    switch (r.int(14)) {
      case 0: // wrong rkey
        return encodeRequest({ opcode: r.pick([Op.read, Op.write, Op.cas, Op.persist]), offset: 0n, length: 8, rkey: (rkey ^ (1 + r.int(0xffffffff))) >>> 0, region });
      case 1: // no such region
        return encodeRequest({ opcode: Op.write, length: 8, rkey, region: w.regions.length + r.int(0xffff - w.regions.length) });
      case 2: // past the end, with the payload claimed
        return encodeRequest({ opcode: Op.write, offset: BigInt(sizeBytes - r.int(8)), length: 8 + r.int(64), rkey, region });
      case 3: // offset + length overflows 64 bits
        return encodeRequest({ opcode: r.pick([Op.read, Op.write, Op.persist]), offset: 2n ** 64n - BigInt(1 + r.int(4096)), length: 4096 + r.int(4096), rkey, region, aux: 0 });
      case 4: // misaligned atomic
        return encodeRequest({ opcode: r.pick([Op.cas, Op.faa]), offset: BigInt(1 + 8 * r.int(16) + r.int(7)), length: 8, rkey, region });
      case 5: // data length over the frame limit
        return encodeRequest({ opcode: r.pick([Op.read, Op.write, Op.writeImm]), length: MAX_DATA_BYTES + 1 + r.int(2 ** 31), rkey, region });
      case 6: // message over the negotiated limit
        return encodeRequest({ opcode: Op.message, requestId: this.id(), length: w.maxMessageBytes + 1 + r.int(1 << 20) });
      case 7: // unknown opcode (or a server-only one, or AUTH again)
        return encodeRequest({ opcode: r.pick([0, 9, 10, 0x7f, Op.hello, Op.welcome, Op.auth, 0xff]), length: r.int(64), rkey, region });
      case 8: // bad magic
        return encodeRequest({ magic: r.int(0x10000) | 1, opcode: Op.read, length: 8, rkey, region });
      case 9: // bad version
        return encodeRequest({ version: 2 + r.int(254), opcode: Op.read, length: 8, rkey, region });
      case 10: // nonzero flags
        return encodeRequest({ opcode: Op.read, length: 8, rkey, region, flags: 1 + r.int(0xffff) });
      case 11: // persist whose 64-bit length (length | aux << 32) runs past the end
        return encodeRequest({ opcode: Op.persist, offset: 0n, length: r.int(2 ** 32), rkey, region, aux: 1 + r.int(2 ** 32 - 1) });
      case 12: // atomic with a wrong width
        return encodeRequest({ opcode: r.pick([Op.cas, Op.faa]), offset: 0n, length: r.pick([0, 4, 16, 2 ** 32 - 1]), rkey, region });
      default: // a message with addressing fields set
        return encodeRequest({ opcode: Op.message, requestId: this.id(), length: 4, offset: BigInt(1 + r.int(100)), rkey, region });
    }
  }

  /** A header with every field random (valid magic and version half of the time). */
  randomHeader(): Buffer {
    const r = this.random;
    const header = r.bytes(REQUEST_HEADER_BYTES);
    if (r.chance(0.5)) {
      header.writeUInt16LE(REQUEST_MAGIC, 0);
      header[2] = VERSION;
      if (r.chance(0.5)) header[3] = 1 + r.int(8);
      // Random 32-bit keys never match in practice; the real key is not used here.
    }
    return header;
  }
}

async function runConnection(options: FuzzOptions, random: Random, counts: FuzzCounts): Promise<void> {
  const scenario = random.pick(SCENARIOS);
  counts.scenarios[scenario] = (counts.scenarios[scenario] ?? 0) + 1;
  counts.connections++;
  let socket: net.Socket;
  try {
    socket = await rawConnect(options.host, options.port);
  } catch {
    return; // refused (e.g. over the connection limit): nothing to fuzz
  }
  socket.on('error', () => undefined);
  const reader = new ByteReader(socket);
  const send = (frame: Buffer): void => {
    counts.frames++;
    counts.bytes += frame.length;
    if (!socket.destroyed) socket.write(frame);
  };
  const n = Math.max(1, options.framesPerConnection);
  try {
    switch (scenario) {
      case 'randomBytes':
        for (let i = 0; i < n; i++) send(random.bytes(1 + random.int(200)));
        break;
      case 'noHandshake':
        for (let i = 0; i < n; i++) send(encodeRequest({ opcode: 1 + random.int(8), length: random.int(64), rkey: random.int(2 ** 32) }));
        break;
      case 'truncatedAuth': {
        await reader.take(RESPONSE_HEADER_BYTES + 32);
        const auth = Buffer.concat([encodeRequest({ opcode: Op.auth, length: 64 }), random.bytes(64)]);
        send(auth.subarray(0, random.int(auth.length)));
        socket.end();
        break;
      }
      case 'wrongProof': {
        await reader.take(RESPONSE_HEADER_BYTES + 32);
        send(Buffer.concat([encodeRequest({ opcode: Op.auth, length: 64 }), random.bytes(64)]));
        break;
      }
      default: {
        const welcome = await rawHandshake(socket, reader, options.secret, random.bytes(32));
        if (welcome === undefined) break;
        counts.handshakes++;
        const session = new Session(random, welcome, options.writable);
        for (let i = 0; i < n - 1; i++) send(session.benign());
        if (scenario === 'hostile') {
          send(session.hostile());
          if (random.chance(0.3)) send(random.bytes(1 + random.int(100))); // trailing garbage
        } else if (scenario === 'randomHeaders') {
          send(session.randomHeader());
          socket.end(); // a header that parses as a short frame may wait for more: end the stream
        } else {
          // truncatedFrame: a write that claims more payload than it sends, then end of stream.
          const w = welcome.regions[0];
          const frame = Buffer.concat([encodeRequest({ opcode: Op.write, requestId: 1, offset: 0n, length: 64, rkey: (w.rkey ^ 1) >>> 0, region: 0 }), random.bytes(64)]);
          send(frame.subarray(0, 1 + random.int(REQUEST_HEADER_BYTES - 1)));
          socket.end();
        }
      }
    }
    // End our side too, so that a server still waiting for bytes sees the end of the stream now.
    if (!socket.destroyed) socket.end();
    if (await reader.closed(3000)) counts.closedByServer++;
  } finally {
    socket.destroy();
  }
}

/** Run the fuzzer; resolves with what it did once every connection is over. Deterministic per seed. */
export async function fuzzServer(options: FuzzOptions): Promise<FuzzCounts> {
  const master = new Random(options.seed);
  const counts: FuzzCounts = { connections: 0, frames: 0, bytes: 0, handshakes: 0, closedByServer: 0, scenarios: {} };
  const parallel = Math.max(1, options.parallel ?? 8);
  const seeds = Array.from({ length: options.connections }, () => master.int(2 ** 31));
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < seeds.length) {
        const seed = seeds[next++];
        await runConnection(options, new Random(seed), counts);
      }
    }),
  );
  return counts;
}
