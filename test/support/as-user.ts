// Runs one action under another user's credentials, for permission tests: a child `node -e <code>`
// spawned with {uid, gid} (libuv drops the supplementary groups, so the child is in exactly one
// group), that performs the action and prints one JSON line {ok, code, value}. The code is inline,
// not a file, so the user needs no read access to the repository; only the node binary must be
// reachable by it.
//
// The action and the function that builds its context travel as source text (Function.toString),
// so both must be self-contained: arrow functions or function expressions that use only their
// parameters, globals and `require`. runHere() runs the same action in this process, with the same
// result shape and the same JSON round trip of the value, so a table can run either way.

import { spawn } from 'node:child_process';

export interface RunUser { readonly uid: number; readonly gid: number }

/** What an action did: a value (JSON: bigints become decimal strings) or an error code (`EACCES`, ...). */
export interface ActionResult {
  readonly ok: boolean;
  readonly code?: string;
  readonly message?: string;
  readonly value?: unknown;
}

export interface ContextFactory<I, C> {
  readonly make: (input: I) => C;
  readonly input: I;
}

const OUTPUT_LIMIT_BYTES = 1 << 20;
const DEFAULT_TIMEOUT_MS = 15_000;

/** Source text that evaluates to the function; refuses shapes that are no expression (`method() {}`). */
export function functionSource(fn: (...args: never[]) => unknown): string {
  const source = fn.toString();
  if (!/^(async\s*)?(\(|function\b|[A-Za-z_$][\w$]*\s*=>)/.test(source)) {
    throw new Error(`an action shipped to a child must be an arrow function or a function expression, not:\n${source.slice(0, 200)}`);
  }
  return source;
}

function jsonText(value: unknown): string {
  return JSON.stringify(value === undefined ? null : value, (_key, item: unknown) => (typeof item === 'bigint' ? item.toString() : item));
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : `no error code (${String(error)})`;
}

/** The same action in this process (as root, for the root rows of a table). */
export async function runHere<I, C>(action: (context: C) => Promise<unknown>, context: ContextFactory<I, C>): Promise<ActionResult> {
  try {
    // Rebuilt from source, like in a child: an action that leans on a closure fails here too, not only as another user.
    const rebuild = <T>(fn: T): T => new Function('require', `return (${functionSource(fn as (...args: never[]) => unknown)});`)(require) as T;
    const value: unknown = await rebuild(action)(rebuild(context.make)(context.input));
    return { ok: true, value: JSON.parse(jsonText(value)) };
  } catch (error) {
    return { ok: false, code: codeOf(error), message: (error as Error | null)?.message };
  }
}

/** The action in a child process with the user's uid and gid. */
export async function runAs<I, C>(user: RunUser, action: (context: C) => Promise<unknown>, context: ContextFactory<I, C>, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<ActionResult> {
  const code = `'use strict';
const jsonText = ${jsonText.toString()};
const codeOf = ${codeOf.toString()};
const make = (${functionSource(context.make)});
const action = (${functionSource(action)});
Promise.resolve()
  .then(() => action(make(JSON.parse(process.argv[1]))))
  .then((value) => ({ ok: true, value }), (error) => ({ ok: false, code: codeOf(error), message: error && error.message }))
  .then((result) => process.stdout.write(jsonText(result) + '\\n'));`;
  const child = spawn(process.execPath, ['-e', code, JSON.stringify(context.input)], {
    uid: user.uid,
    gid: user.gid,
    cwd: '/',
    env: { PATH: '/usr/local/bin:/usr/bin:/bin', LC_ALL: 'C' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (data: Buffer) => { if (stdout.length < OUTPUT_LIMIT_BYTES) stdout += data.toString(); });
  child.stderr.on('data', (data: Buffer) => { if (stderr.length < OUTPUT_LIMIT_BYTES) stderr += data.toString(); });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('close', (exitCode, signal) => resolve({ code: exitCode, signal }));
  });
  clearTimeout(timer);
  const line = stdout.trim().split('\n').pop() ?? '';
  if (exit.code !== 0 || !line.startsWith('{')) {
    const why = exit.error ? exit.error.message : exit.signal ? `killed by ${exit.signal} (timeout ${timeoutMs} ms?)` : `exit code ${exit.code}`;
    throw new Error(`the child running as uid ${user.uid} failed (${why}); can that user execute ${process.execPath}?\n${stderr.slice(0, 2000)}`);
  }
  return JSON.parse(line) as ActionResult;
}
