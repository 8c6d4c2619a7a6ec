/**
 * Script shebang normalisation.
 *
 * Since @upstash/ratelimit 2.1 every script starts with `#!lua flags=allow-key-locking`, a flag only
 * Upstash knows; stock Redis answers `ERR Unexpected flag in script shebang`. We drop the flags Redis
 * does not know on EVAL / EVAL_RO / SCRIPT LOAD, and remember sha1(original) → sha1(rewritten) so the
 * client's EVALSHA of the original SHA still hits the cache: a warm call stays one EVALSHA.
 */
import { createHash } from 'node:crypto';
import type { Command } from './commands.ts';

const KNOWN_FLAGS = new Set(['no-writes', 'allow-oom', 'allow-stale', 'no-cluster', 'allow-cross-slot-keys']);
const MAX_ALIASES = 10_000;

export function sha1(data: Buffer | string): string {
  return createHash('sha1').update(data).digest('hex');
}

/**
 * Rewrites the shebang of a script if it carries flags Redis does not know; `undefined` if the
 * script is fine as it is. A shebang left with no flags becomes an empty line, so the line numbers
 * in Redis's error messages still match the caller's source.
 */
export function normaliseShebang(script: Buffer): Buffer | undefined {
  if (script.length < 5 || script.toString('latin1', 0, 5) !== '#!lua') return undefined;
  let end = script.indexOf(0x0a);
  if (end === -1) end = script.length;
  const line = script.toString('utf8', 0, end);
  const parts = line.slice(5).trim().split(/\s+/).filter(Boolean);
  let changed = false;
  const kept: string[] = [];
  for (const part of parts) {
    if (!part.startsWith('flags=')) {
      kept.push(part);
      continue;
    }
    const flags = part.slice(6).split(',').filter(Boolean);
    const known = flags.filter((f) => KNOWN_FLAGS.has(f));
    if (known.length !== flags.length) changed = true;
    if (known.length > 0) kept.push(`flags=${known.join(',')}`);
  }
  if (!changed) return undefined;
  const hadFlagsLeft = kept.some((p) => p.startsWith('flags='));
  const head = hadFlagsLeft || kept.length > 0 ? `#!lua ${kept.join(' ')}` : '';
  return Buffer.concat([Buffer.from(head, 'utf8'), script.subarray(end)]);
}

/** sha1(original) → sha1(rewritten), bounded (oldest dropped first). */
export class ScriptAliases {
  #map = new Map<string, string>();

  remember(original: string, rewritten: string): void {
    this.#map.delete(original);
    this.#map.set(original, rewritten);
    if (this.#map.size > MAX_ALIASES) {
      const oldest = this.#map.keys().next().value;
      if (oldest !== undefined) this.#map.delete(oldest);
    }
  }

  resolve(sha: string): string {
    return this.#map.get(sha.toLowerCase()) ?? sha;
  }

  /**
   * Rewrites one command in place for Redis; returns a function that maps Redis's reply back to
   * what the client expects (only SCRIPT LOAD needs one: it answers the original SHA).
   */
  prepare(cmd: Command): ((reply: unknown) => unknown) | undefined {
    const sub = cmd.args[0]?.toString('latin1').toUpperCase();
    if (cmd.name === 'EVAL' || cmd.name === 'EVAL_RO') {
      this.#rewrite(cmd, 0);
      return undefined;
    }
    if ((cmd.name === 'EVALSHA' || cmd.name === 'EVALSHA_RO') && cmd.args[0]) {
      cmd.args[0] = Buffer.from(this.resolve(cmd.args[0].toString('latin1')), 'latin1');
      return undefined;
    }
    if (cmd.name === 'SCRIPT' && sub === 'LOAD' && cmd.args[1]) {
      const original = sha1(cmd.args[1]);
      if (this.#rewrite(cmd, 1)) return (reply) => (Buffer.isBuffer(reply) ? Buffer.from(original, 'latin1') : reply);
      return undefined;
    }
    if (cmd.name === 'SCRIPT' && sub === 'EXISTS') {
      for (let i = 1; i < cmd.args.length; i++) {
        const arg = cmd.args[i];
        if (arg) cmd.args[i] = Buffer.from(this.resolve(arg.toString('latin1')), 'latin1');
      }
    }
    return undefined;
  }

  #rewrite(cmd: Command, index: number): boolean {
    const script = cmd.args[index];
    if (!script) return false;
    const rewritten = normaliseShebang(script);
    if (!rewritten) return false;
    this.remember(sha1(script), sha1(rewritten));
    cmd.args[index] = rewritten;
    return true;
  }
}
