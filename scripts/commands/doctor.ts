// `dpms doctor`: checks the machine for what dpms needs (doctor-checks.ts) and prints one line per
// check with its status and, when something is off, how to fix it; then a summary line. The exit status
// is documented in the help text: operators and scripts gate on it (0 runs, 1 something required is
// missing; --strict makes warnings count).

import type { Argv } from 'yargs';
import { runDoctorChecks, type CheckResult, type CheckStatus } from './doctor-checks';
import { EXIT, run } from './run';

const EPILOG = `Statuses: ok; note (worth knowing, nothing to fix for development, e.g. emulated PM); warn (a feature
is unavailable, e.g. no RDMA device for the verbs transport, but dpms runs); FAIL (dpms cannot run).

Exit status:
  0  dpms can run here (notes and warnings may be printed)
  1  something required is missing (a FAIL); with --strict, also any warning
  2  bad command line

--dir D: checks the pools (directory, sizes) and node ports of D/cluster.yaml. A directory that does
not exist yet, or has no cluster.yaml yet, is checked with dpms up's defaults (a note says so); a
cluster.yaml that does not load is a FAIL.
--json prints the checks as a JSON array of {check, status ("ok"|"note"|"warn"|"fail"), message, fix?,
details?} and nothing else on stdout.`;

const LABELS: Readonly<Record<CheckStatus, string>> = { ok: 'ok', note: 'note', warn: 'warn', fail: 'FAIL' };

/** 0 when dpms can run, 1 when a check failed (or, strict, warned). */
export function doctorExitStatus(results: readonly CheckResult[], strict: boolean): number {
  const bad = results.some((result) => result.status === 'fail' || (strict && result.status === 'warn'));
  return bad ? EXIT.problems : EXIT.ok;
}

function count(results: readonly CheckResult[], status: CheckStatus): number {
  return results.filter((result) => result.status === status).length;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** The human report: a line per check, the fix indented under it, and a summary. */
export function formatDoctorReport(results: readonly CheckResult[], strict: boolean): string {
  const nameWidth = Math.max(...results.map((result) => result.check.length));
  const lines: string[] = [];
  for (const result of results) {
    lines.push(`${LABELS[result.status].padEnd(4)}  ${result.check.padEnd(nameWidth)}  ${result.message}`);
    if (result.fix !== undefined) lines.push(`${' '.repeat(4 + 2 + nameWidth + 2)}fix: ${result.fix}`);
  }
  const failures = count(results, 'fail');
  const warnings = count(results, 'warn');
  const status = doctorExitStatus(results, strict);
  const verdict = failures > 0
    ? 'something dpms needs is missing (see FAIL above)'
    : warnings > 0 ? `dpms can run here, with limits (see warn above)${strict ? '; --strict counts warnings' : ''}` : 'dpms can run here';
  lines.push('');
  lines.push(`summary: ${count(results, 'ok')} ok, ${plural(count(results, 'note'), 'note')}, ${plural(warnings, 'warning')}, ${plural(failures, 'failure')}: ${verdict} (exit ${status})`);
  return lines.join('\n');
}

export function registerDoctorCommand(yargs: Argv): Argv {
  return yargs.command('doctor', 'check this machine for dpms: FUSE, libpmem and PM, RDMA devices, memory for pools, ports', (y) => y
    .option('dir', { type: 'string', describe: 'a dpms up state directory: check its cluster.yaml (pool directory and sizes, node ports)' })
    .option('json', { type: 'boolean', default: false, describe: 'print the checks as JSON' })
    .option('strict', { type: 'boolean', default: false, describe: 'exit 1 on warnings too' })
    .epilog(EPILOG),
  (argv) => run(async () => {
    const results = await runDoctorChecks({ dir: argv.dir });
    if (argv.json) console.log(JSON.stringify(results, null, 2));
    else console.log(formatDoctorReport(results, argv.strict));
    return doctorExitStatus(results, argv.strict);
  }));
}
