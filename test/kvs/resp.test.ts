// Proves the RESP2 request parser and reply encoders (kvs/resp.ts) and the Redis glob matcher
// (kvs/glob.ts): pipelined requests give the same arguments however the bytes are split into chunks
// (at every byte boundary, one byte at a time, and at random, seed printed), arguments lying in one
// chunk are not copied, malformed input and input over every limit fail with Redis's protocol error
// texts without buffering past the limit, inline commands split like Redis's sdssplitargs, and KEYS
// patterns match exactly what a Redis 7.0.15 server matched for the same keys.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { globMatch, prefixUpperBound } from '../../kvs';
import { arrayReply, bulkReply, errorReply, integerReply, NULL_BULK_REPLY, RespRequestParser, simpleStringReply, splitInlineArguments, type RespLimits } from '../../kvs/resp';
import { Random, testSeed } from '../support/random';

function multibulk(...args: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes: Buffer = Buffer.isBuffer(arg) ? arg : Buffer.from(arg);
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** Every request parsed from the chunks, each as its arguments in latin1 (bytes one to one). */
function parseChunks(chunks: readonly Buffer[], limits?: Partial<RespLimits>): string[][] {
  const parser = new RespRequestParser(limits);
  const requests: string[][] = [];
  for (const chunk of chunks) parser.push(chunk, (args) => requests.push(args.map((arg) => arg.toString('latin1'))));
  assert.equal(parser.bufferedBytes, 0, 'bytes left over after complete requests');
  return requests;
}

function protocolError(chunks: readonly Buffer[], limits?: Partial<RespLimits>): { message: string; before: string[][]; parser: RespRequestParser } {
  const parser = new RespRequestParser(limits);
  const before: string[][] = [];
  for (const chunk of chunks) {
    try {
      parser.push(chunk, (args) => before.push(args.map((arg) => arg.toString('latin1'))));
    } catch (error) {
      assert.equal((error as { code?: string }).code, 'DPMS_PROTOCOL', String(error));
      return { message: (error as Error).message, before, parser };
    }
  }
  assert.fail('no protocol error');
}

const binary = Buffer.from([0x00, 0x0d, 0x0a, 0xff, 0x24, 0x2a, 0x0d]);
const PIPELINE = Buffer.concat([
  multibulk('SET', 'key', 'value'),
  multibulk('SET', binary, binary),
  multibulk('GET', ''),
  Buffer.from('*0\r\n'), // an empty request: skipped
  Buffer.from('PING\r\n'),
  Buffer.from('\r\n'), // an empty inline line: skipped
  Buffer.from('set "a b" \'c d\' "\\x41\\n"\n'),
  multibulk('MSET', 'x'.repeat(300), 'y'.repeat(1000)),
  Buffer.from('  ECHO   hi  \r\n'),
]);
const EXPECTED = [
  ['SET', 'key', 'value'],
  ['SET', binary.toString('latin1'), binary.toString('latin1')],
  ['GET', ''],
  ['PING'],
  ['set', 'a b', 'c d', 'A\n'],
  ['MSET', 'x'.repeat(300), 'y'.repeat(1000)],
  ['ECHO', 'hi'],
];

test('a pipeline in one chunk gives every request in order', () => {
  assert.deepEqual(parseChunks([PIPELINE]), EXPECTED);
});

test('the same pipeline split at every byte boundary, and one byte at a time, gives the same requests', () => {
  for (let at = 1; at < PIPELINE.length; at++) {
    assert.deepEqual(parseChunks([PIPELINE.subarray(0, at), PIPELINE.subarray(at)]), EXPECTED, `split at byte ${at}`);
  }
  const bytes: Buffer[] = [];
  for (let at = 0; at < PIPELINE.length; at++) bytes.push(PIPELINE.subarray(at, at + 1));
  assert.deepEqual(parseChunks(bytes), EXPECTED);
});

test('random chunkings of many pipelined requests give the same requests', () => {
  const seed = testSeed('resp parser chunking');
  const random = new Random(seed);
  const requests: string[][] = [];
  const wire: Buffer[] = [];
  for (let index = 0; index < 300; index++) {
    const args = ['SET', `k${index}`, Buffer.from(random.bytes(random.int(3000))).toString('latin1')];
    requests.push(args);
    wire.push(multibulk(...args.map((arg) => Buffer.from(arg, 'latin1'))));
  }
  const all = Buffer.concat(wire);
  for (let round = 0; round < 20; round++) {
    const chunks: Buffer[] = [];
    for (let at = 0; at < all.length;) {
      const size = 1 + random.int(5000);
      chunks.push(all.subarray(at, at + size));
      at += size;
    }
    assert.deepEqual(parseChunks(chunks), requests, `seed ${seed} round ${round}`);
  }
});

test('an argument that lies in one chunk is a slice of that chunk, not a copy', () => {
  const chunk = multibulk('SET', 'key', 'v'.repeat(10_000));
  const parser = new RespRequestParser();
  let args: Buffer[] = [];
  parser.push(chunk, (request) => {
    args = request;
  });
  assert.equal(args.length, 3);
  for (const arg of args) assert.equal(arg.buffer, chunk.buffer, 'argument was copied');
});

test('malformed requests fail with Redis protocol error texts, after the requests before them', () => {
  const cases: Array<[string, string]> = [
    ['*2\r\n$3\r\nGET\r\n$x\r\n', 'Protocol error: invalid bulk length'],
    ['*2\r\n$3\r\nGET\r\n$-5\r\n', 'Protocol error: invalid bulk length'],
    ['*2\r\n$3\r\nGET\r\nx\r\n', "Protocol error: expected '$', got 'x'"],
    ['*x\r\n', 'Protocol error: invalid multibulk length'],
    ['*1\r\n$3\r\nGETxx', 'Protocol error: expected CRLF after bulk data'],
    ['*1\n$3\r\nGET\r\n', 'Protocol error: expected CRLF after header'],
    ['*01\r\n', 'Protocol error: invalid multibulk length'],
    ['GET "a\r\n', 'Protocol error: unbalanced quotes in request'],
    ['GET "a"b\r\n', 'Protocol error: unbalanced quotes in request'],
    ["GET 'a\r\n", 'Protocol error: unbalanced quotes in request'],
    [`*1\r\n$${'9'.repeat(70)}\r\n`, 'Protocol error: too big bulk count string'],
    [`*${'1'.repeat(70)}`, 'Protocol error: too big mbulk count string'],
  ];
  for (const [input, message] of cases) {
    const { message: got, before, parser } = protocolError([Buffer.from('PING\r\n'), Buffer.from(input)]);
    assert.equal(got, message, JSON.stringify(input));
    assert.deepEqual(before, [['PING']]);
    // A failed parser stays failed: the connection must be closed.
    assert.throws(() => parser.push(Buffer.from('PING\r\n'), () => assert.fail('parsed after an error')), /Protocol error/);
  }
});

test('limits are enforced before the data they would buffer arrives', () => {
  const limits = { maxBulkBytes: 1000, maxArrayElements: 10, maxInlineBytes: 100, maxRequestBytes: 3000 };
  assert.equal(protocolError([Buffer.from('*1\r\n$1001\r\n')], limits).message, 'Protocol error: invalid bulk length');
  assert.deepEqual(parseChunks([multibulk('x'.repeat(1000))], limits), [['x'.repeat(1000)]]);
  assert.equal(protocolError([Buffer.from('*11\r\n')], limits).message, 'Protocol error: invalid multibulk length');
  const inline = protocolError([Buffer.from('x'.repeat(60)), Buffer.from('x'.repeat(60))], limits);
  assert.equal(inline.message, 'Protocol error: too big inline request');
  // Four 900-byte bulks pass the bulk limit but not the request limit, which fails at the header.
  const big = 'y'.repeat(900);
  const tooBig = protocolError([multibulk('SET', big, big, big, big)], limits);
  assert.match(tooBig.message, /^Protocol error: request too large/);
  // The default bulk limit is above the store's value limit (a slightly larger value gets a store
  // error instead of a closed connection) but bounded.
  assert.equal(protocolError([Buffer.from(`*1\r\n$${1024 ** 3}\r\n`)]).message, 'Protocol error: invalid bulk length');
});

test('a bulk split across chunks is buffered only up to its announced length', () => {
  const parser = new RespRequestParser();
  const request = multibulk('SET', 'k', 'z'.repeat(100_000));
  const got: Buffer[][] = [];
  parser.push(request.subarray(0, 50_000), (args) => got.push(args));
  assert.ok(parser.bufferedBytes <= 50_000 && parser.bufferedBytes > 40_000, `buffered ${parser.bufferedBytes}`);
  parser.push(request.subarray(50_000), (args) => got.push(args));
  assert.equal(got.length, 1);
  assert.equal(got[0]![2]!.toString(), 'z'.repeat(100_000));
  assert.equal(parser.bufferedBytes, 0);
});

test('inline arguments split as Redis sdssplitargs splits them', () => {
  const split = (line: string): string[] => splitInlineArguments(Buffer.from(line, 'latin1')).map((arg) => arg.toString('latin1'));
  assert.deepEqual(split('set  key   value'), ['set', 'key', 'value']);
  assert.deepEqual(split('set "a\\tb\\\\c\\"d" \'it\\\'s\''), ['set', 'a\tb\\c"d', "it's"]);
  // \xHH needs two hex digits; otherwise the backslash just escapes the next character.
  assert.deepEqual(split('"\\x00\\xff\\xzz"'), ['\x00\xffxzz']);
  assert.deepEqual(split('""'), ['']);
  // Blanks between arguments are C isspace(); inside an unquoted argument only space, \t, \r, \n end it.
  assert.deepEqual(split('a\tb\x0bc \x0b d'), ['a', 'b\x0bc', 'd']);
  assert.deepEqual(split('before\x00after'), ['before']);
  assert.deepEqual(split('   '), []);
});

test('reply encoders produce RESP2', () => {
  assert.equal(simpleStringReply('OK').toString(), '+OK\r\n');
  assert.equal(errorReply('ERR bad\r\nthing').toString(), '-ERR bad thing\r\n');
  assert.equal(integerReply(-42).toString(), ':-42\r\n');
  assert.equal(integerReply(2n ** 63n - 1n).toString(), ':9223372036854775807\r\n');
  assert.equal(bulkReply(binary).toString('latin1'), `$7\r\n${binary.toString('latin1')}\r\n`);
  assert.equal(bulkReply('').toString(), '$0\r\n\r\n');
  assert.equal(NULL_BULK_REPLY.toString(), '$-1\r\n');
  assert.equal(arrayReply([integerReply(1), NULL_BULK_REPLY, arrayReply([])]).toString(), '*3\r\n:1\r\n$-1\r\n*0\r\n');
  assert.throws(() => integerReply(2 ** 60));
});

// Recorded from redis-server 7.0.15: KEYS <pattern> over exactly these keys.
const GLOB_KEYS = ['hello', 'hallo', 'hxllo', 'hllo', 'heeeello', 'a/b/c', 'a*b', 'a?b', 'a[b', 'a]b', 'ab', 'abc', 'b', '-', 'x\\y', 'user:1', 'user:10', 'user:2', 'User:3'];
const REDIS_GLOB_RESULTS: Array<[string, string[]]> = [
  ['*', GLOB_KEYS],
  ['h?llo', ['hallo', 'hello', 'hxllo']],
  ['h*llo', ['hallo', 'heeeello', 'hello', 'hllo', 'hxllo']],
  ['h[ae]llo', ['hallo', 'hello']],
  ['h[^e]llo', ['hallo', 'hxllo']],
  ['h[a-b]llo', ['hallo']],
  ['h[b-a]llo', ['hallo']],
  ['a\\*b', ['a*b']],
  ['a\\?b', ['a?b']],
  ['a[*]b', ['a*b']],
  ['a[\\]]b', ['a]b']],
  ['a[b', ['ab']],
  ['a[', []],
  ['a[]b', []],
  ['*/*', ['a/b/c']],
  ['user:1*', ['user:1', 'user:10']],
  ['user:[0-9]', ['user:1', 'user:2']],
  ['[uU]ser:*', ['User:3', 'user:1', 'user:10', 'user:2']],
  ['x\\\\y', ['x\\y']],
  ['*b', ['a*b', 'a?b', 'a[b', 'a]b', 'ab', 'b']],
  ['?', ['-', 'b']],
  ['a[^]b', ['a*b', 'a?b', 'a[b', 'a]b']],
  ['[-]', ['-']],
  ['a*c*', ['a/b/c', 'abc']],
  ['ab\\', []],
  ['*[', []],
];

test('glob patterns match what Redis 7.0 matches', () => {
  for (const [pattern, expected] of REDIS_GLOB_RESULTS) {
    const got = GLOB_KEYS.filter((key) => globMatch(Buffer.from(pattern), Buffer.from(key)));
    assert.deepEqual(got.sort(), [...expected].sort(), `pattern ${pattern}`);
  }
  // An abusive pattern finishes quickly (Redis's early exit) instead of backtracking exponentially.
  const started = Date.now();
  assert.equal(globMatch(Buffer.from('a*'.repeat(50) + 'b'), Buffer.from('a'.repeat(5000))), false);
  assert.ok(Date.now() - started < 5000);
});

test('prefixUpperBound is the first key after every key with the prefix', () => {
  assert.deepEqual(prefixUpperBound(Buffer.from('user:')), Buffer.from('user;'));
  assert.deepEqual(prefixUpperBound(Buffer.from([0x61, 0xff, 0xff])), Buffer.from([0x62]));
  assert.equal(prefixUpperBound(Buffer.from([0xff])), undefined);
});
