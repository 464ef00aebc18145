// Progress of long work (formatting pools, checking a cluster, benchmark phases): a cli-progress bar
// on a terminal, plain lines (at most one per 10 %) when stderr is not one, so logs and CI output stay
// readable. Progress goes to stderr; results go to stdout.

import cliProgress from 'cli-progress';

export interface Progress {
  /** Set the amount done (and optionally a short note shown beside the bar). */
  update(done: number, note?: string): void;
  /** Add to the amount done. */
  increment(by?: number, note?: string): void;
  /** End the bar (or print the last line). Idempotent. */
  stop(): void;
}

export interface ProgressOptions {
  /** What is being done, e.g. "formatting node 1". */
  readonly label: string;
  readonly total: number;
  /** Shown after the numbers, e.g. "MiB", "inodes". */
  readonly unit?: string;
  /** Force plain lines (tests, --json) or silence (quiet). */
  readonly mode?: 'auto' | 'plain' | 'quiet';
  readonly stream?: NodeJS.WriteStream;
}

export function startProgress(options: ProgressOptions): Progress {
  const stream = options.stream ?? process.stderr;
  const mode = options.mode ?? 'auto';
  const total = Math.max(1, options.total);
  const unit = options.unit ? ` ${options.unit}` : '';
  let done = 0;
  let note = '';
  let stopped = false;
  if (mode === 'quiet') {
    return { update: () => {}, increment: () => {}, stop: () => {} };
  }
  if (mode === 'auto' && stream.isTTY) {
    const bar = new cliProgress.SingleBar({
      stream, format: `${options.label} [{bar}] {percentage}% {value}/{total}${unit} {note}`, hideCursor: true,
      clearOnComplete: false, barsize: 30,
    }, cliProgress.Presets.shades_classic);
    bar.start(total, 0, { note: '' });
    // Closures, not `this`: callers may pass progress.increment around on its own.
    const update = (value: number, text?: string): void => {
      if (stopped) return;
      done = Math.min(total, value);
      if (text !== undefined) note = text;
      bar.update(done, { note });
    };
    return {
      update,
      increment(by = 1, text) { update(done + by, text); },
      stop() { if (!stopped) { stopped = true; bar.stop(); } },
    };
  }
  let lastTenth = -1;
  const line = (): void => {
    const tenth = Math.floor((done / total) * 10);
    if (tenth === lastTenth) return;
    lastTenth = tenth;
    stream.write(`${options.label}: ${Math.floor((done / total) * 100)}% (${done}/${total}${unit})${note ? ` ${note}` : ''}\n`);
  };
  line();
  const update = (value: number, text?: string): void => {
    if (stopped) return;
    done = Math.min(total, value);
    if (text !== undefined) note = text;
    line();
  };
  return {
    update,
    increment(by = 1, text) { update(done + by, text); },
    // Stopped short of the total (an error, an interrupted run): one last line says where it stopped.
    stop() { if (!stopped) { stopped = true; if (done < total) { lastTenth = -1; line(); } } },
  };
}
