/**
 * One request's session: lazy (no I/O until read or saved), its state a tagged union (./plan.ts
 * `Stored`), its writes planned by ./plan.ts and sent in one tick. Knows nothing of HTTP: the
 * cookie it reads is handed in, the cookies it sets go to a sink (`edge-redis/hono` wires both).
 */
import { SessionError } from '../errors.ts';
import type { KeySchema } from '../keys.ts';
import { runScript } from '../script.ts';
import { base64url, digest, jsonReply, randomBytes } from '../util.ts';
import { decide, planWrites, type Change, type Intent, type Op, type Stored } from './plan.ts';
import { SCRIPTS } from './scripts.ts';
import type { CookieSink, Session, SessionData, SessionRedis, SessionRequest } from './types.ts';

/** A session id: 256 random bits, base64url. It lives only in the cookie. */
export const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;
/** The storage key and the public handle of an id: SHA-256, so neither reveals the id. */
export const hashId = async (id: string): Promise<string> => base64url(await digest('SHA-256', id));
const newId = () => base64url(randomBytes(32));

/**
 * Index scores are a session's absolute deadline plus this, and entries are pruned only this long
 * after their score, so a skewed isolate clock never drops a live session from the index that
 * `revokeAll` relies on. Dead entries are also dropped whenever a list or revoke-all meets them.
 */
export const INDEX_SLACK_MS = 60_000;

export interface Loaded { pttl: number; now: number; fields: Map<string, string> }

/** The load script's reply, or null for a session that is gone (unknown, expired, revoked). */
export function parseLoad(reply: unknown): Loaded | null {
  const doc = jsonReply(reply);
  if (!Array.isArray(doc)) return null;
  const [pttl, now, flat]: unknown[] = doc;
  // An empty HGETALL arrives as `{}`: cjson cannot tell an empty array from an empty object.
  if (typeof pttl !== 'number' || typeof now !== 'number' || pttl === -2 || !Array.isArray(flat) || !flat.length) return null;
  const fields = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) fields.set(String(flat[i]), String(flat[i + 1]));
  return { pttl, now, fields };
}

/** The user id rule of setUser and the store's per-user calls. */
export function checkUser(userId: string): string {
  if (typeof userId !== 'string' || !userId || userId.length > 256) throw new TypeError('session: userId must be a non-empty string of at most 256 characters');
  return userId;
}

/** What every request's session of one store shares. */
export interface SessionConfig {
  redis: SessionRedis;
  keys: KeySchema;
  idleMs: number;
  absoluteMs: number;
  touchIntervalMs: number;
}

export class RequestSession implements Session {
  private readonly o: SessionConfig;
  private readonly hadCookie: boolean;
  private readonly userAgent: string | undefined;
  private readonly sink: CookieSink;
  private stored: Stored;
  private loading: Promise<void> | undefined;
  private data = new Map<string, unknown>();
  private intent: Intent = { changes: new Map(), newUid: undefined, drop: undefined, clearCookie: false, touch: false };
  private failed = false;

  constructor(o: SessionConfig, request: SessionRequest) {
    this.o = o;
    this.hadCookie = request.cookie !== undefined;
    this.userAgent = request.userAgent;
    this.sink = request.setCookie;
    this.stored = request.cookie !== undefined && SESSION_ID.test(request.cookie) ? { kind: 'unknown', id: request.cookie } : { kind: 'none' };
  }

  private key(hash: string) { return this.o.keys.key('sess', hash); }
  private index(userId: string) { return this.o.keys.key('user-sess', userId); }

  private load(): Promise<void> {
    const stored = this.stored;
    if (stored.kind !== 'unknown') return this.loading ?? Promise.resolve();
    return (this.loading ??= (async () => {
      let hash: string;
      let s: Loaded | null;
      try {
        hash = await hashId(stored.id);
        s = parseLoad(await runScript(this.o.redis, SCRIPTS.load, [this.key(hash)], [this.index(''), hash]));
      } catch (cause) {
        this.failed = true;
        throw new SessionError('load', { cause });
      }
      if (this.stored.kind !== 'unknown') return; // destroy() ran meanwhile
      if (!s) return this.forget(); // unknown, expired or revoked: a fresh anonymous session
      for (const [f, v] of s.fields) {
        if (f.startsWith('_')) continue;
        try { this.data.set(f, JSON.parse(v)); } catch { this.data.set(f, v); }
      }
      const created = Number(s.fields.get('_created') ?? s.now);
      this.stored = { kind: 'live', id: stored.id, hash, created, uid: s.fields.get('_uid') };
      // Touch only when that buys at least the interval: slides the idle timeout, and stops near the absolute cap.
      this.intent.touch ||= Math.min(this.o.idleMs, created + this.o.absoluteMs - s.now) - s.pttl >= this.o.touchIntervalMs;
    })());
  }

  /** Back to "no session". The pending changes stay: they are this request's intent. */
  private forget() {
    this.stored = { kind: 'none' };
    this.data = new Map();
    this.intent.touch = false;
  }

  private uid() { return this.stored.kind === 'live' ? this.stored.uid : undefined; }

  async get(key: string) {
    await this.load();
    const c = this.intent.changes.get(key);
    return c !== undefined ? c?.value : this.data.get(key);
  }
  async all() {
    await this.load();
    const out: SessionData = Object.fromEntries(this.data);
    for (const [k, c] of this.intent.changes) c ? (out[k] = c.value) : delete out[k];
    return out;
  }
  set(key: string, value: unknown) {
    if (typeof key !== 'string' || !key || key.startsWith('_')) throw new TypeError(`session: key "${key}" is empty or reserved`);
    if (value === undefined) return void this.intent.changes.set(key, null);
    const json = JSON.stringify(value); // throws on cycles and BigInt, in the handler where the bug is
    if (json === undefined) throw new TypeError(`session: the value of "${key}" is not JSON`);
    this.intent.changes.set(key, { json, value } satisfies Change);
  }
  delete(key: string) { this.set(key, undefined); }
  async getUser() {
    await this.load();
    return this.intent.newUid ?? this.uid();
  }
  setUser(userId: string) { this.intent.newUid = checkUser(userId); }
  async login(userId: string) {
    checkUser(userId);
    await this.regenerate();
    this.setUser(userId);
  }
  async regenerate() {
    await this.load();
    const { data } = this;
    const { changes } = this.intent;
    const uid = this.intent.newUid ?? this.uid();
    this.destroy();
    this.data = data;
    this.intent.changes = changes;
    this.intent.newUid = uid;
  }
  destroy() {
    const s = this.stored;
    if (s.kind !== 'none') this.intent.drop = { id: s.id, uid: s.kind === 'live' ? s.uid : undefined };
    this.intent.clearCookie = this.hadCookie;
    this.forget();
    this.intent.changes = new Map();
    this.intent.newUid = undefined;
  }
  touch() { this.intent.touch = this.stored.kind !== 'none'; }
  async handle() {
    await this.load();
    return this.stored.kind === 'live' ? this.stored.hash : undefined;
  }

  async save(): Promise<void> {
    if (this.failed) return;
    try {
      if (await this.write()) {
        // Gone between load and save (revoked, expired, destroyed elsewhere): what this request set
        // starts a fresh session; what it had read from the dead one is not carried over.
        this.forget();
        if (await this.write()) throw new Error('session: a fresh session was refused');
      }
    } catch (cause) {
      this.failed = true;
      throw cause instanceof SessionError ? cause : new SessionError('save', { cause });
    }
  }

  /** One round trip (the plan issued in one tick); true when the session to update no longer exists. */
  private async write(): Promise<boolean> {
    const decision = decide(this.stored, this.data, this.intent);
    const { drop } = this.intent;
    if (!decision.write && !drop) {
      if (this.intent.clearCookie) this.cookie('', 0);
      return false;
    }
    const s = this.stored;
    const id = decision.write === 'create' ? newId() : s.kind === 'none' ? undefined : s.id;
    const [hash, dropHash] = await Promise.all([
      decision.write === undefined || id === undefined ? undefined : s.kind === 'live' && decision.write === 'update' ? s.hash : hashId(id),
      drop && hashId(drop.id),
    ]);
    const ops = planWrites({
      stored: s, data: this.data, intent: this.intent, decision, hash, dropHash, userAgent: this.userAgent, now: Date.now(),
      idleMs: this.o.idleMs, absoluteMs: this.o.absoluteMs, slackMs: INDEX_SLACK_MS,
      sessionKey: (h) => this.key(h), indexKey: (u) => this.index(u), indexPrefix: this.index(''),
    });
    this.intent.drop = undefined;
    const replies = await Promise.all(ops.map((op) => this.run(op)));
    if (!hash || !id) {
      this.cookie('', 0);
      return false;
    }
    const reply = replies[ops.findIndex((op) => op.op === 'save')];
    if (!Array.isArray(reply) || typeof reply[0] !== 'number') return true;
    const created = s.kind === 'live' && decision.write === 'update' ? s.created : Number(reply[1]);
    this.stored = { kind: 'live', id, hash, created, uid: this.intent.newUid ?? this.uid() };
    for (const [k, c] of this.intent.changes) c === null ? this.data.delete(k) : this.data.set(k, c.value);
    this.intent.changes = new Map();
    this.intent.touch = false;
    this.cookie(id, Math.floor(reply[0] / 1000));
    return false;
  }

  private run(op: Op): Promise<unknown> {
    const r = this.o.redis;
    switch (op.op) {
      case 'del': return r.del(op.key);
      case 'zrem': return r.zrem(op.key, op.member);
      case 'zadd': return r.zadd(op.key, { score: op.score, member: op.member });
      case 'zremrangebyscore': return r.zremrangebyscore(op.key, '-inf', op.max);
      case 'pexpire': return r.pexpire(op.key, op.ms);
      case 'save': return runScript(r, SCRIPTS.save, [op.key], op.args);
    }
  }

  private cookie(value: string, maxAgeS: number) {
    this.sink(value, maxAgeS);
    this.intent.clearCookie = false;
  }
}
