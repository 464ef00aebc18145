// RESP2, the Redis serialization protocol, as the RESP gateway (kvs/gateway.ts) speaks it: an
// incremental parser of *requests* and encoders of *replies*.
//
// Written by hand on purpose: the npm `redis-parser` parses replies (what a client reads), not
// requests, and puts no limit on what it buffers. A server parser must accept what redis-cli, telnet
// and client libraries send (multibulk arrays of bulk strings, and inline commands), split at any
// byte across TCP chunks and with many pipelined requests in one chunk, and refuse anything over its
// limits before buffering it. The inline splitting follows Redis's sdssplitargs() and the error texts
// follow Redis's networking.c, so that clients see the messages they know.

import { DpmsError } from '../pdsm';
import { KV_LIMITS } from './types';

/** Bounds on what one request may make the parser buffer. */
export interface RespLimits {
  /** Largest bulk string (a key, a value or any argument), in bytes. */
  readonly maxBulkBytes: number;
  /** Most arguments in one multibulk request. */
  readonly maxArrayElements: number;
  /** Longest inline command line, in bytes. */
  readonly maxInlineBytes: number;
  /** Most bytes one request may take on the wire (headers and payloads). */
  readonly maxRequestBytes: number;
}

export const RESP_LIMITS: RespLimits = {
  // A little more than the largest value, so that a value just over the store's limit still reaches
  // the store and gets its DPMS_VALUE_TOO_LARGE message as an ordinary error reply; only a bulk that
  // could never be stored is a protocol error that closes the connection.
  maxBulkBytes: KV_LIMITS.maxValueBytes + 1024 * 1024,
  maxArrayElements: 1024 * 1024,
  maxInlineBytes: 64 * 1024,
  maxRequestBytes: 64 * 1024 * 1024,
};

/** Longest "*<count>" or "$<length>" header line we wait for; a legitimate one has at most 21 bytes. */
const MAX_HEADER_LINE_BYTES = 64;

const CR = 0x0d;
const LF = 0x0a;
const STAR = 0x2a;
const DOLLAR = 0x24;

const enum State { RequestStart, ArrayHeader, BulkHeader, BulkData, Inline }

function protocolError(detail: string): DpmsError {
  return new DpmsError('DPMS_PROTOCOL', `Protocol error: ${detail}`);
}

/**
 * Redis's string2ll() on an ASCII byte range: an optional '-', then digits without leading zeros
 * ("0" alone is fine), at most 20 characters. Returns undefined for anything else. Only used for
 * header lengths, which must also fit a safe JavaScript integer.
 */
function parseHeaderInteger(bytes: Buffer, start: number, end: number): number | undefined {
  if (end <= start || end - start > 20) return undefined;
  let position = start;
  let negative = false;
  if (bytes[position] === 0x2d) {
    negative = true;
    position++;
    if (position === end) return undefined;
  }
  if (bytes[position] === 0x30) return end - position === 1 && !negative ? 0 : undefined;
  let value = 0;
  for (; position < end; position++) {
    const digit = bytes[position]! - 0x30;
    if (digit < 0 || digit > 9) return undefined;
    value = value * 10 + digit;
  }
  if (!Number.isSafeInteger(value)) return undefined;
  return negative ? -value : value;
}

/**
 * An incremental parser of RESP2 requests for one connection. push() takes whatever bytes arrived
 * and hands every complete request to the callback as its arguments (Buffers that may be slices of
 * the chunk: zero copy when an argument lies in one chunk). Input that is not RESP, or over a
 * limit, throws a DpmsError 'DPMS_PROTOCOL' whose message is the text Redis would send; requests
 * completed earlier in the same chunk have been delivered by then. After an error the parser stays
 * failed: the connection must be closed.
 */
export class RespRequestParser {
  private readonly limits: RespLimits;
  private state = State.RequestStart;
  private failure: DpmsError | undefined;
  /** Bytes of a header or inline line that began in an earlier chunk. */
  private partialLine: Buffer[] = [];
  private partialLineBytes = 0;
  /** The request being assembled. */
  private args: Buffer[] = [];
  private expectedArgs = 0;
  private requestBytes = 0;
  /** The bulk being assembled across chunks: its pieces and how many payload bytes (plus CRLF) it needs. */
  private bulkPieces: Buffer[] = [];
  private bulkHave = 0;
  private bulkNeed = 0;

  constructor(limits: Partial<RespLimits> = {}) {
    this.limits = { ...RESP_LIMITS, ...limits };
  }

  /** Bytes held for an incomplete request (for tests and for bounding memory). */
  get bufferedBytes(): number {
    return this.partialLineBytes + this.bulkHave + this.args.reduce((sum, arg) => sum + arg.length, 0);
  }

  push(chunk: Buffer, onRequest: (args: Buffer[]) => void): void {
    if (this.failure) throw this.failure;
    try {
      this.parse(chunk, onRequest);
    } catch (error) {
      if (error instanceof DpmsError && error.code === 'DPMS_PROTOCOL') {
        this.failure = error;
        this.partialLine = [];
        this.bulkPieces = [];
        this.args = [];
      }
      throw error;
    }
  }

  private parse(chunk: Buffer, onRequest: (args: Buffer[]) => void): void {
    let offset = 0;
    while (offset < chunk.length) {
      switch (this.state) {
        case State.RequestStart:
          // Like Redis, a request that begins with '*' is a multibulk array, anything else is inline.
          this.requestBytes = 0;
          this.state = chunk[offset] === STAR ? State.ArrayHeader : State.Inline;
          break;

        case State.Inline: {
          const end = this.findLine(chunk, offset, this.limits.maxInlineBytes, 'too big inline request');
          if (end < 0) return;
          const line = this.takeLine(chunk, offset, end);
          offset = end + 1;
          this.state = State.RequestStart;
          // Redis accepts "\n" alone as the terminator of an inline command and strips a '\r' before it.
          const length = line.length > 0 && line[line.length - 1] === CR ? line.length - 1 : line.length;
          const args = splitInlineArguments(line.subarray(0, length));
          if (args.length > 0) onRequest(args);
          break;
        }

        case State.ArrayHeader: {
          const end = this.findLine(chunk, offset, MAX_HEADER_LINE_BYTES, 'too big mbulk count string');
          if (end < 0) return;
          const line = this.takeHeaderLine(chunk, offset, end);
          offset = end + 1;
          const count = parseHeaderInteger(line, 1, line.length);
          if (count === undefined || count > this.limits.maxArrayElements) throw protocolError('invalid multibulk length');
          if (count <= 0) {
            // "*0" and "*-1" are empty requests: Redis skips them without a reply.
            this.state = State.RequestStart;
            break;
          }
          this.expectedArgs = count;
          this.args = [];
          this.state = State.BulkHeader;
          break;
        }

        case State.BulkHeader: {
          if (this.partialLineBytes === 0 && chunk[offset] !== DOLLAR) {
            throw protocolError(`expected '$', got '${String.fromCharCode(chunk[offset]!)}'`);
          }
          const end = this.findLine(chunk, offset, MAX_HEADER_LINE_BYTES, 'too big bulk count string');
          if (end < 0) return;
          const line = this.takeHeaderLine(chunk, offset, end);
          offset = end + 1;
          const length = parseHeaderInteger(line, 1, line.length);
          if (length === undefined || length < 0 || length > this.limits.maxBulkBytes) throw protocolError('invalid bulk length');
          this.addRequestBytes(length + 2);
          this.bulkNeed = length + 2;
          this.bulkHave = 0;
          this.state = State.BulkData;
          break;
        }

        case State.BulkData: {
          const available = chunk.length - offset;
          const missing = this.bulkNeed - this.bulkHave;
          if (this.bulkHave === 0 && available >= missing) {
            // The whole bulk is in this chunk: hand out a slice, no copy.
            this.finishBulk(chunk.subarray(offset, offset + missing));
            offset += missing;
          } else if (available < missing) {
            this.bulkPieces.push(chunk.subarray(offset));
            this.bulkHave += available;
            return;
          } else {
            this.bulkPieces.push(chunk.subarray(offset, offset + missing));
            offset += missing;
            const whole = Buffer.concat(this.bulkPieces, this.bulkNeed);
            this.bulkPieces = [];
            this.bulkHave = 0;
            this.finishBulk(whole);
          }
          if (this.args.length === this.expectedArgs) {
            const args = this.args;
            this.args = [];
            this.state = State.RequestStart;
            onRequest(args);
          } else {
            this.state = State.BulkHeader;
          }
          break;
        }
      }
    }
  }

  /** A bulk's payload plus its CRLF: check the CRLF and keep the payload. */
  private finishBulk(withCrlf: Buffer): void {
    const length = withCrlf.length - 2;
    if (withCrlf[length] !== CR || withCrlf[length + 1] !== LF) throw protocolError('expected CRLF after bulk data');
    this.args.push(withCrlf.subarray(0, length));
  }

  private addRequestBytes(bytes: number): void {
    this.requestBytes += bytes;
    if (this.requestBytes > this.limits.maxRequestBytes) {
      throw protocolError(`request too large (more than ${this.limits.maxRequestBytes} bytes)`);
    }
  }

  /**
   * The index of the '\n' that ends the line starting at offset (the line may have begun in an
   * earlier chunk), or -1 after keeping the rest of the chunk for later. A line that grows past
   * maxBytes without ending is a protocol error.
   */
  private findLine(chunk: Buffer, offset: number, maxBytes: number, tooBig: string): number {
    const end = chunk.indexOf(LF, offset);
    const lineBytes = this.partialLineBytes + (end < 0 ? chunk.length : end) - offset;
    if (lineBytes > maxBytes) throw protocolError(tooBig);
    if (end < 0) {
      // Copy: the chunk may be a pooled buffer, and partial lines are small.
      this.partialLine.push(Buffer.from(chunk.subarray(offset)));
      this.partialLineBytes = lineBytes;
    }
    return end;
  }

  /** The line from offset to end (exclusive of the '\n'), joined with what earlier chunks held. */
  private takeLine(chunk: Buffer, offset: number, end: number): Buffer {
    const tail = chunk.subarray(offset, end);
    if (this.partialLineBytes === 0) return tail;
    this.partialLine.push(tail);
    const line = Buffer.concat(this.partialLine);
    this.partialLine = [];
    this.partialLineBytes = 0;
    return line;
  }

  /** A "*N\r\n" or "$N\r\n" header without its CRLF; headers must end in CRLF, not a bare LF. */
  private takeHeaderLine(chunk: Buffer, offset: number, end: number): Buffer {
    const line = this.takeLine(chunk, offset, end);
    if (line.length === 0 || line[line.length - 1] !== CR) throw protocolError('expected CRLF after header');
    this.addRequestBytes(line.length + 1);
    return line.subarray(0, line.length - 1);
  }
}

function isSpace(byte: number): boolean {
  // C isspace() in the "C" locale: space, \t, \n, \v, \f, \r.
  return byte === 0x20 || (byte >= 0x09 && byte <= 0x0d);
}

function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x61 + 10;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x41 + 10;
  return -1;
}

/**
 * Split an inline command line into arguments as Redis's sdssplitargs() does: blanks separate
 * arguments; "double quotes" understand \n \r \t \b \a \xHH and \<any>; 'single quotes' only \'; a
 * closing quote must be followed by a blank or the end. Like the C original, which works on a
 * NUL-terminated string, a NUL byte ends the line.
 */
export function splitInlineArguments(line: Buffer): Buffer[] {
  const nul = line.indexOf(0);
  const length = nul < 0 ? line.length : nul;
  const args: Buffer[] = [];
  let position = 0;
  for (;;) {
    while (position < length && isSpace(line[position]!)) position++;
    if (position >= length) return args;
    let inDouble = false;
    let inSingle = false;
    let done = false;
    const current: number[] = [];
    while (!done) {
      const byte = position < length ? line[position]! : -1;
      const following = position + 1 < length ? line[position + 1]! : -1;
      if (inDouble) {
        if (byte === 0x5c && following === 0x78 && position + 3 < length
          && hexValue(line[position + 2]!) >= 0 && hexValue(line[position + 3]!) >= 0) {
          current.push(hexValue(line[position + 2]!) * 16 + hexValue(line[position + 3]!));
          position += 3;
        } else if (byte === 0x5c && following >= 0) {
          position++;
          const escapes: Record<number, number> = { 0x6e: LF, 0x72: CR, 0x74: 0x09, 0x62: 0x08, 0x61: 0x07 };
          current.push(escapes[following] ?? following);
        } else if (byte === 0x22) {
          if (following >= 0 && !isSpace(following)) throw protocolError('unbalanced quotes in request');
          done = true;
        } else if (byte < 0) {
          throw protocolError('unbalanced quotes in request');
        } else {
          current.push(byte);
        }
      } else if (inSingle) {
        if (byte === 0x5c && following === 0x27) {
          position++;
          current.push(0x27);
        } else if (byte === 0x27) {
          if (following >= 0 && !isSpace(following)) throw protocolError('unbalanced quotes in request');
          done = true;
        } else if (byte < 0) {
          throw protocolError('unbalanced quotes in request');
        } else {
          current.push(byte);
        }
      } else if (byte < 0 || byte === 0x20 || byte === LF || byte === CR || byte === 0x09) {
        done = true;
      } else if (byte === 0x22) {
        inDouble = true;
      } else if (byte === 0x27) {
        inSingle = true;
      } else {
        current.push(byte);
      }
      if (position < length) position++;
    }
    args.push(Buffer.from(current));
  }
}

// ---- Reply encoders. Each returns one complete, encoded RESP2 reply. ----

const CRLF = Buffer.from('\r\n');

/** Replies are single lines: a CR or LF inside a status or error text would end it early. */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}

export function simpleStringReply(text: string): Buffer {
  return Buffer.from(`+${oneLine(text)}\r\n`);
}

/** An error reply. The text should start with an error kind such as "ERR " or "NOPROTO ". */
export function errorReply(text: string): Buffer {
  return Buffer.from(`-${oneLine(text)}\r\n`);
}

export function integerReply(value: number | bigint): Buffer {
  if (typeof value === 'number' && !Number.isSafeInteger(value)) throw new Error(`dpms assertion failed: integer reply ${value}`);
  return Buffer.from(`:${value}\r\n`);
}

export function bulkReply(value: Uint8Array | string): Buffer {
  const payload = typeof value === 'string' ? Buffer.from(value) : value;
  const header = `$${payload.length}\r\n`;
  // One allocation and one copy of the payload, so that a reply is one write.
  const reply = Buffer.allocUnsafe(header.length + payload.length + 2);
  reply.write(header, 0, 'latin1');
  reply.set(payload, header.length);
  CRLF.copy(reply, header.length + payload.length);
  return reply;
}

export const NULL_BULK_REPLY: Buffer = Buffer.from('$-1\r\n');
export const OK_REPLY: Buffer = simpleStringReply('OK');

/** An array of already-encoded replies. */
export function arrayReply(items: readonly Buffer[]): Buffer {
  return Buffer.concat([Buffer.from(`*${items.length}\r\n`), ...items]);
}
