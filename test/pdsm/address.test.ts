// Proves that global addresses encode (node, offset) losslessly up to their limits, reject every malformed input with DPMS_INVALID_ADDRESS, and round-trip through text and little-endian u64 media form.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  formatAddress, isNull, makeAddress, nodeOf, NULL_ADDRESS, offsetOf, parseAddress, readAddress, toAddress,
  writeAddress, type GlobalAddress,
} from '../../pdsm';
import { code } from '../support/errors';

const MAX_NODE = 4095;
const MAX_OFFSET = 2 ** 40 - 1;


test('makeAddress / nodeOf / offsetOf round trip, including the limits', () => {
  const cases: Array<[number, number]> = [
    [0, 0], [0, 1], [1, 0], [0, 4096], [1, 4096], [7, 0x12345678], [4094, 2 ** 32], [MAX_NODE, 0], [0, MAX_OFFSET],
    [MAX_NODE, MAX_OFFSET], [2048, 2 ** 39 + 17],
  ];
  const seen = new Set<number>();
  for (const [node, offset] of cases) {
    const address = makeAddress(node, offset);
    assert.ok(Number.isSafeInteger(address), `${node}:${offset} is not a safe integer`);
    assert.equal(nodeOf(address), node, `node of ${node}:${offset}`);
    assert.equal(offsetOf(address), offset, `offset of ${node}:${offset}`);
    assert.equal(toAddress(address), address);
    seen.add(address);
  }
  assert.equal(seen.size, cases.length, 'two different (node, offset) pairs gave the same address');
  assert.equal(makeAddress(MAX_NODE, MAX_OFFSET), 2 ** 52 - 1);
  assert.equal(makeAddress(1, 0), 2 ** 40);
});

test('invalid node ids and offsets throw DPMS_INVALID_ADDRESS', () => {
  const bad: Array<[number, number]> = [
    [-1, 0], [MAX_NODE + 1, 0], [1.5, 0], [Number.NaN, 0], [Infinity, 0],
    [0, -1], [0, MAX_OFFSET + 1], [0, 0.5], [0, Number.NaN], [0, Infinity], [0, 2 ** 53],
  ];
  for (const [node, offset] of bad) {
    assert.throws(() => makeAddress(node, offset), code('DPMS_INVALID_ADDRESS'), `makeAddress(${node}, ${offset})`);
  }
  const badValues: Array<number | bigint> = [-1, 2 ** 52, 2 ** 53, 1.25, Number.NaN, Infinity, -0.5, 2n ** 52n, 2n ** 64n - 1n, -1n];
  for (const value of badValues) {
    assert.throws(() => toAddress(value), code('DPMS_INVALID_ADDRESS'), `toAddress(${String(value)})`);
  }
  assert.equal(toAddress(2n ** 52n - 1n), 2 ** 52 - 1);
  assert.equal(toAddress(12345n), 12345);
});

test('NULL_ADDRESS is 0, node 0 offset 0, and only it is null', () => {
  assert.equal(NULL_ADDRESS, 0);
  assert.equal(nodeOf(NULL_ADDRESS), 0);
  assert.equal(offsetOf(NULL_ADDRESS), 0);
  assert.equal(isNull(NULL_ADDRESS), true);
  assert.equal(isNull(makeAddress(0, 0)), true);
  assert.equal(isNull(makeAddress(0, 64)), false);
  assert.equal(isNull(makeAddress(1, 0)), false);
  assert.equal(formatAddress(NULL_ADDRESS), 'null');
});

test('formatAddress and parseAddress round trip', () => {
  const addresses = [makeAddress(0, 4096), makeAddress(3, 0x1f40), makeAddress(MAX_NODE, MAX_OFFSET), makeAddress(1, 0), NULL_ADDRESS];
  for (const address of addresses) {
    const text = formatAddress(address);
    assert.equal(parseAddress(text), address, `parse(format(${address})) via '${text}'`);
  }
  assert.equal(formatAddress(makeAddress(3, 0x1f40)), '3:0x1f40');
  assert.equal(formatAddress(makeAddress(MAX_NODE, MAX_OFFSET)), '4095:0xffffffffff');
  assert.equal(parseAddress('2:4096'), makeAddress(2, 4096), 'decimal offset');
  assert.equal(parseAddress('2:0x1000'), makeAddress(2, 4096), 'hex offset');
  assert.equal(parseAddress('2:0X1000'.replace('X', 'x')), makeAddress(2, 4096));
  assert.equal(parseAddress(' 5:0x40 '), makeAddress(5, 64), 'surrounding blanks');
  assert.equal(parseAddress(String(2 ** 40 + 64)), makeAddress(1, 64), 'a plain integer');
  for (const text of ['', 'x', '1:', ':5', '1:0xZZ', '-1:5', '1:-5', '4096:0', `0:${2 ** 40}`, '1.5:3', '1:2:3', String(2 ** 52), 'nul']) {
    assert.throws(() => parseAddress(text), code('DPMS_INVALID_ADDRESS'), `parseAddress('${text}')`);
  }
});

test('writeAddress / readAddress store a little-endian u64 in a Buffer', () => {
  const buffer = Buffer.alloc(32, 0xee);
  const address = makeAddress(MAX_NODE, MAX_OFFSET);
  writeAddress(buffer, 8, address);
  assert.equal(buffer.readBigUInt64LE(8), 2n ** 52n - 1n, 'u64 on media');
  assert.equal(buffer[7], 0xee, 'byte before untouched');
  assert.equal(buffer[16], 0xee, 'byte after untouched');
  assert.equal(readAddress(buffer, 8), address);
  const small = makeAddress(2, 0x1234);
  writeAddress(buffer, 0, small);
  assert.equal(buffer.readBigUInt64LE(0), (2n << 40n) | 0x1234n);
  assert.equal(readAddress(buffer, 0), small);
  writeAddress(buffer, 24, NULL_ADDRESS);
  assert.equal(buffer.readBigUInt64LE(24), 0n);
  assert.equal(isNull(readAddress(buffer, 24)), true);
  // Values that are not addresses (bits above 51 set) are refused when read from media.
  buffer.writeBigUInt64LE(2n ** 52n, 0);
  assert.throws(() => readAddress(buffer, 0), code('DPMS_INVALID_ADDRESS'));
  buffer.writeBigUInt64LE(2n ** 64n - 1n, 0);
  assert.throws(() => readAddress(buffer, 0), code('DPMS_INVALID_ADDRESS'));
  // Out of the buffer: Node's own range check, never a silent write.
  assert.throws(() => writeAddress(buffer, 28, small), RangeError);
  assert.throws(() => readAddress(buffer, 25), RangeError);
  const randomish: GlobalAddress[] = [];
  for (let i = 0; i < 200; i++) randomish.push(makeAddress((i * 2654435761) % 4096, (i * 40503 * 65599) % 2 ** 40));
  const packed = Buffer.alloc(8 * randomish.length);
  randomish.forEach((a, i) => writeAddress(packed, i * 8, a));
  randomish.forEach((a, i) => assert.equal(readAddress(packed, i * 8), a));
});
