// Redis glob patterns for KEYS and SCAN MATCH in the RESP gateway, and the key range a pattern or a
// prefix can match (used by the gateway and by `dpms kv scan --prefix`). The matcher is a port of
// stringmatchlen() from Redis's util.c (7.0, with its guard against abusive patterns). No npm glob
// library matches Redis's semantics on bytes ('*' crosses '/', '[^a]', '[a-z]' with swapped ends,
// '\x' escapes, a trailing unclosed '['), so clients get exactly the matches a Redis server gives.

/** Patterns that nest '*' deeper than this match nothing, as in Redis. */
const MAX_NESTING = 1000;

/**
 * C `char` is signed on the platforms Redis runs on, so a range such as [a-\xff] compares bytes above
 * 0x7f as negative numbers; do the same to give the same answers.
 */
function signed(byte: number): number {
  return byte >= 0x80 ? byte - 0x100 : byte;
}

interface MatchState {
  skipLongerMatches: boolean;
}

function matchFrom(pattern: Uint8Array, patternStart: number, string: Uint8Array, stringStart: number, state: MatchState, nesting: number): boolean {
  if (nesting > MAX_NESTING) return false;
  let p = patternStart;
  let s = stringStart;
  const patternEnd = pattern.length;
  const stringEnd = string.length;
  while (p < patternEnd && s < stringEnd) {
    const c = pattern[p]!;
    if (c === 0x2a /* '*' */) {
      while (p + 1 < patternEnd && pattern[p + 1] === 0x2a) p++;
      if (p + 1 === patternEnd) return true;
      while (s < stringEnd) {
        if (matchFrom(pattern, p + 1, string, s, state, nesting + 1)) return true;
        if (state.skipLongerMatches) return false;
        s++;
      }
      // The rest of the pattern matches nowhere in the rest of the string, so no earlier '*' can
      // help by matching more: give up on the whole pattern (Redis's fix for exponential patterns).
      state.skipLongerMatches = true;
      return false;
    } else if (c === 0x3f /* '?' */) {
      s++;
    } else if (c === 0x5b /* '[' */) {
      p++;
      const not = p < patternEnd && pattern[p] === 0x5e /* '^' */;
      if (not) p++;
      let match = false;
      for (;;) {
        if (p < patternEnd && pattern[p] === 0x5c /* '\\' */ && patternEnd - p >= 2) {
          p++;
          if (pattern[p] === string[s]) match = true;
        } else if (p < patternEnd && pattern[p] === 0x5d /* ']' */) {
          break;
        } else if (p >= patternEnd) {
          // An unclosed '[': step back so that the p++ below ends the pattern.
          p--;
          break;
        } else if (patternEnd - p >= 3 && pattern[p + 1] === 0x2d /* '-' */) {
          let start = signed(pattern[p]!);
          let end = signed(pattern[p + 2]!);
          if (start > end) [start, end] = [end, start];
          const byte = signed(string[s]!);
          p += 2;
          if (byte >= start && byte <= end) match = true;
        } else if (pattern[p] === string[s]) {
          match = true;
        }
        p++;
      }
      if (not) match = !match;
      if (!match) return false;
      s++;
    } else {
      if (c === 0x5c /* '\\' */ && patternEnd - p >= 2) p++;
      if (pattern[p] !== string[s]) return false;
      s++;
    }
    p++;
    if (s === stringEnd) {
      while (p < patternEnd && pattern[p] === 0x2a) p++;
      break;
    }
  }
  return p === patternEnd && s === stringEnd;
}

/** Does `string` match the Redis glob `pattern` (byte-wise, case-sensitive)? */
export function globMatch(pattern: Uint8Array, string: Uint8Array): boolean {
  return matchFrom(pattern, 0, string, 0, { skipLongerMatches: false }, 0);
}

/**
 * The literal bytes every match of `pattern` starts with (up to its first special character), so
 * that KEYS and SCAN can read only that key range instead of the whole store.
 */
export function globLiteralPrefix(pattern: Uint8Array): Buffer {
  let end = 0;
  while (end < pattern.length && ![0x2a, 0x3f, 0x5b, 0x5c].includes(pattern[end]!)) end++;
  return Buffer.from(pattern.subarray(0, end));
}

/** The first key after every key that starts with `prefix`, or undefined when there is none (all 0xff). */
export function prefixUpperBound(prefix: Uint8Array): Buffer | undefined {
  let end = prefix.length;
  while (end > 0 && prefix[end - 1] === 0xff) end--;
  if (end === 0) return undefined;
  const bound = Buffer.from(prefix.subarray(0, end));
  bound[end - 1]! += 1;
  return bound;
}
