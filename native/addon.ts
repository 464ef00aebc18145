// Finds and loads the compiled addon (native/build/Release/dpms_native.node) once. native/index.ts and
// native/fuse.ts type the parts they use; nothing else imports this file.

import path from 'node:path';

// The addon is built by node-gyp into native/build/Release; dist/native/addon.js sits two levels
// below the package root, native/addon.ts one.
function loadAddon(): object {
  const candidates = [
    path.join(__dirname, '..', '..', 'native', 'build', 'Release', 'dpms_native.node'),
    path.join(__dirname, 'build', 'Release', 'dpms_native.node'),
  ];
  let lastError: unknown;
  for (const candidate of candidates) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require(candidate) as object;
    } catch (error) {
      lastError = error;
    }
  }
  throw new Error(`dpms native addon not found (run scripts/setup.sh or npm run build:native): ${String(lastError)}`);
}

/** The addon's exports, untyped: each face casts to the interface it declares. */
export const rawAddon: object = loadAddon();
