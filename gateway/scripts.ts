/**
 * Script shebang normalisation.
 *
 * Since @upstash/ratelimit 2.1 every script starts with `#!lua flags=allow-key-locking`, a flag only
 * Upstash knows; stock Redis answers `ERR Unexpected flag in script shebang`. We drop the flags Redis
 * does not know on EVAL / EVAL_RO / SCRIPT LOAD, and remember sha1(original) → sha1(rewritten) so the
 * client's EVALSHA of the original SHA still hits the cache: a warm call stays one EVALSHA.
 *
 * The aliases live in Redis itself (the hash {@link ALIAS_KEY}), so every gateway process
 * (GATEWAY_WORKERS) and every replica behind a load balancer sees an alias another one made, with
 * a bounded copy in each process in front of it. Each entry is signed (HMAC under a secret the
 * gateways share, see config.ts `scriptAliasSecret`): a token that may write that key could
 * otherwise point another token's EVALSHA at a script of its own choosing. An entry that fails the
 * check, or is gone (eviction, FLUSHALL), is a miss: the EVALSHA answers NOSCRIPT, the client falls
 * back to EVAL, and the alias is made again. A SHA with no alias is remembered as such for a few
 * seconds, so ordinary EVALSHAs cost one extra Redis command at most once per 10 s per process.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { argText, type Arg, type Command } from './commands.ts';

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
export function normaliseShebang(arg: Arg): Buffer | undefined {
  if (typeof arg === 'string' ? !arg.startsWith('#!lua') : arg.length < 5 || arg.toString('latin1', 0, 5) !== '#!lua') return undefined;
  const script = typeof arg === 'string' ? Buffer.from(arg, 'utf8') : arg;
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

/** The Redis hash holding sha1(original) → `sha1(rewritten).signature`. */
export const ALIAS_KEY = 'edge-redis:gateway:script-aliases';
/** Fields the alias hash may hold before it is dropped whole (see ALIAS_WRITE). */
export const ALIAS_LIMIT = 10_000;
/** KEYS[1] = the hash, ARGV = field, value, limit. */
export const ALIAS_WRITE = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[3]) then redis.call('DEL', KEYS[1]) end return 1";
const NEGATIVE_TTL_MS = 10_000;

/** Where aliases are shared: the Redis of the upstream (its gateway-user connection). */
export interface AliasStore {
  /** HMGET: one value per field, null when absent. Rejects when Redis does not answer. */
  read(fields: string[]): Promise<(Buffer | null)[]>;
  /** HSET, not awaited by the request: a lost write only costs a NOSCRIPT → EVAL later. */
  write(field: string, value: string): void;
}

/** A bounded map, oldest dropped first. */
class Bounded<V> {
  readonly #map = new Map<string, V>();
  get(k: string): V | undefined {
    return this.#map.get(k);
  }
  set(k: string, v: V): void {
    this.#map.delete(k);
    this.#map.set(k, v);
    if (this.#map.size > MAX_ALIASES) {
      const oldest = this.#map.keys().next().value;
      if (oldest !== undefined) this.#map.delete(oldest);
    }
  }
  delete(k: string): void {
    this.#map.delete(k);
  }
}

const SHA = /^[0-9a-f]{40}$/;

/** sha1(original) → sha1(rewritten): this process's copy, backed by {@link AliasStore}. */
export class ScriptAliases {
  readonly #map = new Bounded<string>();
  /** SHAs known to have no alias, until the time stored. */
  readonly #none = new Bounded<number>();
  readonly #secret: string;
  readonly #store: AliasStore | undefined;

  constructor(o: { secret: string; store?: AliasStore }) {
    this.#secret = o.secret;
    this.#store = o.store;
  }

  #sign(original: string, rewritten: string): string {
    return createHmac('sha256', this.#secret).update(`${original}:${rewritten}`).digest('hex').slice(0, 32);
  }

  #verify(original: string, rewritten: string, signature: string): boolean {
    const want = Buffer.from(this.#sign(original, rewritten), 'latin1');
    const got = Buffer.from(signature, 'latin1');
    return got.length === want.length && timingSafeEqual(got, want);
  }

  remember(original: string, rewritten: string): void {
    this.#map.set(original, rewritten);
    this.#none.delete(original);
    this.#store?.write(original, `${rewritten}.${this.#sign(original, rewritten)}`);
  }

  resolve(sha: string): string {
    return this.#map.get(sha.toLowerCase()) ?? sha;
  }

  /**
   * Reads from the store the aliases this process does not know yet for the SHAs `cmds` name
   * (EVALSHA, EVALSHA_RO, SCRIPT EXISTS): one HMGET, only when something is unknown; `undefined`
   * (nothing to wait for) otherwise, which is every warm request.
   */
  load(cmds: readonly Command[]): Promise<void> | undefined {
    if (!this.#store) return undefined;
    let wanted: Set<string> | undefined;
    const now = Date.now();
    const want = (arg: Arg | undefined) => {
      if (!arg || arg.length !== 40) return;
      const sha = argText(arg).toLowerCase();
      if (!SHA.test(sha) || this.#map.get(sha) !== undefined) return;
      const none = this.#none.get(sha);
      if (none !== undefined && none > now) return;
      (wanted ??= new Set()).add(sha);
    };
    for (const cmd of cmds) {
      if (cmd.name === 'EVALSHA' || cmd.name === 'EVALSHA_RO') want(cmd.args[0]);
      else if (cmd.name === 'SCRIPT' && cmd.args[0] !== undefined && argText(cmd.args[0]).toUpperCase() === 'EXISTS') cmd.args.slice(1).forEach(want);
    }
    if (!wanted) return undefined;
    const fields = [...wanted];
    return this.#store.read(fields).then(
      (values) => {
        fields.forEach((original, i) => {
          const [rewritten, signature] = values[i]?.toString('latin1').split('.') ?? [];
          if (rewritten && signature && SHA.test(rewritten) && this.#verify(original, rewritten, signature)) this.#map.set(original, rewritten);
          else this.#none.set(original, now + NEGATIVE_TTL_MS);
        });
      },
      () => undefined, // Redis is not answering: the command itself will say so
    );
  }

  /**
   * Rewrites one command in place for Redis; returns a function that maps Redis's reply back to
   * what the client expects (only SCRIPT LOAD needs one: it answers the original SHA).
   */
  prepare(cmd: Command): ((reply: unknown) => unknown) | undefined {
    if (cmd.name === 'EVAL' || cmd.name === 'EVAL_RO') {
      this.#rewrite(cmd, 0);
      return undefined;
    }
    if ((cmd.name === 'EVALSHA' || cmd.name === 'EVALSHA_RO') && cmd.args[0]) {
      cmd.args[0] = this.resolve(argText(cmd.args[0]));
      return undefined;
    }
    if (cmd.name !== 'SCRIPT') return undefined;
    const sub = cmd.args[0] === undefined ? undefined : argText(cmd.args[0]).toUpperCase();
    if (sub === 'LOAD' && cmd.args[1]) {
      const original = sha1(cmd.args[1]);
      if (this.#rewrite(cmd, 1)) return (reply) => (Buffer.isBuffer(reply) ? Buffer.from(original, 'latin1') : reply);
      return undefined;
    }
    if (sub === 'EXISTS') {
      for (let i = 1; i < cmd.args.length; i++) {
        const arg = cmd.args[i];
        if (arg !== undefined) cmd.args[i] = this.resolve(argText(arg));
      }
    }
    return undefined;
  }

  #rewrite(cmd: Command, index: number): boolean {
    const script = cmd.args[index];
    if (!script) return false;
    const rewritten = normaliseShebang(script);
    if (!rewritten) return false;
    // Every time (EVAL is the rare path: clients send EVALSHA first), so an alias Redis forgot
    // is shared again by the next EVAL, whichever process serves it.
    this.remember(sha1(script), sha1(rewritten));
    cmd.args[index] = rewritten;
    return true;
  }
}
