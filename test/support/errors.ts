// Assertion helpers for typed errors: `assert.throws(fn, code('DPMS_X'))` checks the error is a DpmsError with that code.

import assert from 'node:assert/strict';
import { isDpmsError, type DpmsErrorCode } from '../../pdsm';

export function code(expected: DpmsErrorCode): (error: unknown) => true {
  return (error: unknown) => {
    assert.ok(isDpmsError(error), `expected a DpmsError ${expected}, got ${String(error)}`);
    assert.equal(error.code, expected, error.message);
    return true;
  };
}
