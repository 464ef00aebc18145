// Proves crc32c is standard CRC-32C (Castagnoli): known vectors, seed chaining, offset/length slicing,
// and that the hardware (SSE4.2) and table implementations agree on many random inputs.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';

import { crc32c } from '../../native/index';
import { assertCode } from './helpers';

const whole = (data: Uint8Array, seed = 0, soft = false) => crc32c(data, 0, data.length, seed, soft);

test('known vectors', () => {
  for (const soft of [false, true]) {
    assert.equal(whole(Buffer.from('123456789'), 0, soft), 0xe3069283);
    assert.equal(whole(Buffer.alloc(0), 0, soft), 0);
    assert.equal(whole(Buffer.alloc(32, 0x00), 0, soft), 0x8a9136aa); // RFC 3720 B.4
    assert.equal(whole(Buffer.alloc(32, 0xff), 0, soft), 0x62a8ab43);
    const ascending = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    assert.equal(whole(ascending, 0, soft), 0x46dd794e);
    assert.equal(whole(Buffer.from(ascending).reverse(), 0, soft), 0x113fdb5c);
  }
});

test('results are unsigned 32-bit numbers', () => {
  const crc = whole(Buffer.from('123456789'));
  assert.ok(Number.isInteger(crc) && crc >= 0 && crc <= 0xffffffff);
});

test('seed continues a checksum: crc(b, crc(a)) == crc(a || b)', () => {
  const data = randomBytes(1000);
  const full = whole(data);
  for (const cut of [0, 1, 7, 8, 9, 63, 500, 999, 1000]) {
    const first = crc32c(data, 0, cut, 0);
    assert.equal(crc32c(data, cut, data.length - cut, first), full, `cut at ${cut}`);
    assert.equal(crc32c(data, cut, data.length - cut, crc32c(data, 0, cut, 0, true), true), full);
  }
});

test('offset and length select a slice, also of a view with a byteOffset', () => {
  const data = randomBytes(300);
  const view = data.subarray(17, 217);
  assert.equal(crc32c(data, 17, 200, 0), whole(Buffer.from(view)));
  assert.equal(crc32c(view, 3, 50, 0), crc32c(data, 20, 50, 0));
});

test('hardware and software implementations agree', () => {
  for (let i = 0; i < 500; i++) {
    const data = randomBytes(i % 97 === 0 ? 4096 + i : i);
    const offset = i % 9 > data.length ? 0 : i % 9;
    const length = data.length - offset;
    const seed = randomBytes(4).readUInt32LE(0);
    assert.equal(crc32c(data, offset, length, seed), crc32c(data, offset, length, seed, true), `case ${i}`);
  }
});

test('bad arguments are rejected with codes', () => {
  const data = Buffer.alloc(8);
  assertCode(() => crc32c(data, 4, 5, 0), 'DPMS_OUT_OF_BOUNDS');
  assertCode(() => crc32c(data, -1, 1, 0), 'DPMS_OUT_OF_BOUNDS');
  assertCode(() => crc32c(data, 0, 8, 2 ** 32), 'DPMS_INVALID_ARGUMENT');
  assertCode(() => crc32c('abc' as unknown as Uint8Array, 0, 3, 0), 'DPMS_INVALID_ARGUMENT');
});
