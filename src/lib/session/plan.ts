/**
 * What a save writes, decided as a pure function of what the request knows of the stored session
 * and what the request changed: no I/O here (./request.ts runs the plan in one tick, so a batching
 * client sends it as one round trip).
 */

/** A pending change of one field: its JSON (and value) to store, or null to delete it. */
export type Change = { json: string; value: unknown } | null;

/** What the request knows of the stored session. */
export type Stored =
  /** Nothing stored (yet): no cookie, a malformed one, or one found gone. */
  | { kind: 'none' }
  /** A well-formed cookie, not loaded yet. */
  | { kind: 'unknown'; id: string }
  /** Loaded (or written by this request) and present. */
  | { kind: 'live'; id: string; hash: string; created: number | undefined; uid: string | undefined };

/** What the request asked for since the load. */
export interface Intent {
  changes: Map<string, Change>;
  /** The user to bind the session to (setUser / login). */
  newUid: string | undefined;
  /** A stored session this request ends (destroy, regenerate), with its user for the index. */
  drop: { id: string; uid: string | undefined } | undefined;
  /** Send a clearing cookie if nothing else sets one (destroy of a cookie we were sent). */
  clearCookie: boolean;
  /** Extend the expiry and re-send the cookie even if nothing changed. */
  touch: boolean;
}

export interface Decision {
  /** `create`: a new session (new id); `update`: the stored one; undefined: no session write. */
  write: 'create' | 'update' | undefined;
  /** Bind to `Intent.newUid` (it differs from the stored user). */
  bind: boolean;
}

const uidOf = (s: Stored) => (s.kind === 'live' ? s.uid : undefined);

/** Whether the save writes a session, and which. */
export function decide(stored: Stored, data: ReadonlyMap<string, unknown>, intent: Intent): Decision {
  const bind = intent.newUid !== undefined && intent.newUid !== uidOf(stored);
  const sets = [...intent.changes.values()].some((c) => c !== null);
  if (stored.kind === 'none') return { write: data.size > 0 || sets || bind ? 'create' : undefined, bind };
  return { write: intent.changes.size > 0 || bind || intent.touch ? 'update' : undefined, bind };
}

/** One command of the plan. `save` is the save script (./scripts.ts) on `key` with `args`. */
export type Op =
  | { op: 'del'; key: string }
  | { op: 'zrem'; key: string; member: string }
  | { op: 'zadd'; key: string; score: number; member: string }
  | { op: 'zremrangebyscore'; key: string; max: number }
  | { op: 'pexpire'; key: string; ms: number }
  | { op: 'save'; key: string; args: (string | number)[] };

export interface PlanInput {
  stored: Stored;
  data: ReadonlyMap<string, unknown>;
  intent: Intent;
  decision: Decision;
  /** The hash of the session written (undefined when none is). */
  hash: string | undefined;
  /** The hash of `intent.drop`'s session. */
  dropHash: string | undefined;
  userAgent: string | undefined;
  now: number;
  idleMs: number;
  absoluteMs: number;
  /** Index entries are scored by the session's deadline plus this, and pruned only this long after. */
  slackMs: number;
  sessionKey(hash: string): string;
  indexKey(userId: string): string;
  /** The prefix of every index key (`indexKey('')`), for the scripts' membership check. */
  indexPrefix: string;
}

/**
 * The commands of a save, in the order they must run: the ended session's delete; the new user's
 * index entry BEFORE the save (the save and the load check membership, so a concurrent load never
 * sees a bound session its index lacks); the save; the old user's index entry removed AFTER it.
 */
export function planWrites(p: PlanInput): Op[] {
  const ops: Op[] = [];
  const { intent, decision, hash } = p;
  if (intent.drop && p.dropHash) {
    ops.push({ op: 'del', key: p.sessionKey(p.dropHash) });
    if (intent.drop.uid) ops.push({ op: 'zrem', key: p.indexKey(intent.drop.uid), member: p.dropHash });
  }
  if (!decision.write || !hash) return ops;
  const creating = decision.write === 'create';
  if (decision.bind) {
    const idx = p.indexKey(intent.newUid!);
    const created = p.stored.kind === 'live' ? p.stored.created : undefined;
    ops.push(
      { op: 'zadd', key: idx, score: (created ?? p.now) + p.absoluteMs + p.slackMs, member: hash },
      { op: 'zremrangebyscore', key: idx, max: p.now - p.slackMs },
      { op: 'pexpire', key: idx, ms: p.absoluteMs + 2 * p.slackMs },
    );
  }
  const pairs: string[] = [];
  if (creating) {
    for (const [k, v] of p.data) if (!intent.changes.has(k)) pairs.push(k, JSON.stringify(v));
    if (p.userAgent) pairs.push('_ua', p.userAgent.slice(0, 256));
  }
  for (const [k, c] of intent.changes) if (c !== null) pairs.push(k, c.json);
  if (decision.bind) pairs.push('_uid', intent.newUid!);
  const deletes = creating ? [] : [...intent.changes].flatMap(([k, c]) => (c === null ? [k] : []));
  ops.push({ op: 'save', key: p.sessionKey(hash), args: [creating ? 'c' : 'u', p.idleMs, p.absoluteMs, p.indexPrefix, hash, pairs.length / 2, ...pairs, ...deletes] });
  const oldUid = uidOf(p.stored);
  if (decision.bind && oldUid) ops.push({ op: 'zrem', key: p.indexKey(oldUid), member: hash });
  return ops;
}
