// The Rust `peer` example (simple/examples/peer.rs) as a group member in
// browser tests and scripts: commands to its stdin, its event lines read back.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { WAIT_MS } from './harness.mjs';

/** Built by `cargo build -p webrtc-p2p-simple --examples` (and by `cargo test --workspace`), or `$WEBRTC_P2P_PEER_BIN`. */
export const PEER_BIN =
  process.env.WEBRTC_P2P_PEER_BIN ?? fileURLToPath(new URL('../../target/debug/examples/peer', import.meta.url));
/** A user or group id in the peer's lines. */
export const ID = '[0-9a-f]{32}';

/**
 * Runs `bin` with `args`, killed when the test process exits.
 * `waitForLine(regex, count)` resolves with the match of the `count`th
 * stdout line (past or future) that matches, and rejects if the process
 * exits first; `lines` keeps every line with the ms it was read at.
 */
export function startProcess(bin, args, { name = bin, build = 'cargo build -p webrtc-p2p-simple --examples' } = {}) {
  const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  child.once('exit', () => process.off('exit', killOnExit));
  const lines = [];
  const waiters = new Set();
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-10_000);
  });
  const failed = new Promise((_, reject) => {
    child.once('error', (error) => reject(new Error(`cannot start ${bin} (${build}): ${error.message}`)));
    child.once('exit', (code, signal) => reject(new Error(`${name} exited (${code ?? signal}):\n${stderr}`)));
  });
  failed.catch(() => undefined);
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push({ line, at: performance.timeOrigin + performance.now() });
    for (const waiter of waiters) waiter(line);
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  const process_ = {
    child,
    lines,
    /** Sends one line to its stdin. */
    send(command) {
      child.stdin.write(`${command}\n`);
    },
    /** The match of the `count`th line (past or future) that matches `regex`. */
    waitForLine(regex, count = 1) {
      const seen = lines.map(({ line }) => regex.exec(line)).filter((match) => match !== null);
      if (seen.length >= count) return Promise.resolve(seen[count - 1]);
      let matches = seen.length;
      let waiter;
      let timer;
      const matched = new Promise((resolve, reject) => {
        waiter = (line) => {
          const match = regex.exec(line);
          if (match !== null && ++matches === count) resolve(match);
        };
        timer = setTimeout(
          () => reject(new Error(`${name} printed no line matching ${regex}:\n${lines.map((l) => l.line).join('\n')}`)),
          WAIT_MS,
        );
        waiters.add(waiter);
      });
      return Promise.race([matched, failed]).finally(() => {
        waiters.delete(waiter);
        clearTimeout(timer);
      });
    },
    /** When the first line matching `regex` was read. */
    async timeOf(regex) {
      await process_.waitForLine(regex);
      return lines.find(({ line }) => regex.test(line)).at;
    },
    /** Sends `signal` and waits for the exit (at once if it has exited). */
    async stop(signal = 'SIGKILL') {
      if (!running()) return;
      child.kill(signal);
      await once(child, 'exit');
    },
    async kill() {
      await process_.stop('SIGKILL');
    },
    running,
  };
  return process_;
}

/** Starts a `peer` on loopback; `id` is its user id once it has printed it. */
export async function startRust(wsUrl, args = []) {
  const rust = startProcess(PEER_BIN, ['--url', wsUrl, '--ice-address', '127.0.0.1', ...args], { name: 'peer' });
  rust.quit = async () => {
    if (!rust.running()) return;
    rust.send('quit');
    await once(rust.child, 'exit');
  };
  const [, id] = await rust.waitForLine(new RegExp(`^id (${ID})$`));
  rust.id = id;
  return rust;
}

/** The broadcasts a Rust peer printed: `{ from, text }`. */
export function rustReceived(rust) {
  return rust.lines
    .map(({ line }) => new RegExp(`^broadcast (${ID}) (.*)$`).exec(line))
    .filter((match) => match !== null)
    .map(([, from, text]) => ({ from, text }));
}

