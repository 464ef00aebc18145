// Parsing and printing of sizes for the CLI and the cluster config: "64M", "1GiB", "4096" in, "64.0 MiB" out.

import { DpmsError } from './errors';

const MULTIPLIERS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Parse a byte size with an optional binary suffix (K, M, G, T, with or without "iB"/"B"). */
export function parseSize(text: string | number, what: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(String(text));
  if (!match) throw new DpmsError('DPMS_INVALID_ARGUMENT', `${what}: cannot parse size '${text}' (examples: 4096, 64K, 256M, 1G)`);
  const value = Number(match[1]) * MULTIPLIERS[match[2].toLowerCase()];
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new DpmsError('DPMS_INVALID_ARGUMENT', `${what}: size '${text}' must be a whole positive number of bytes`);
  }
  return value;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}
