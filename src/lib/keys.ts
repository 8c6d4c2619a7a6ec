/**
 * The one key schema. Every Redis key the app touches is built here, so a prefix per app and
 * environment keeps several apps (or staging and production) apart in one Redis, and keys that one
 * script touches together share a hash tag so Redis Cluster puts them in one slot.
 *
 * Layout: `<app>:<env>:<kind>:<part>:<part>…`; slot-bound groups: `<app>:<env>:<kind>:{<id>}:<part>`.
 *
 * @example
 * const keys = keySchema({ app: 'shop', env: 'prod' });
 * keys.key('cache', 'product', '42');          // "shop:prod:cache:product:42"
 * keys.slotted('lock', 'order:7', 'fence');    // "shop:prod:lock:{order:7}:fence"
 */

export interface KeySchemaOptions {
  /** @default "edge" */
  app?: string;
  /** @default "dev" */
  env?: string;
}

export interface KeySchema {
  /** `<app>:<env>` */
  readonly prefix: string;
  /** A plain key: `<prefix>:<kind>:<parts…>`. */
  key(kind: string, ...parts: (string | number)[]): string;
  /**
   * A key in the hash slot of `id`: every key built with the same kind and id lands in one Cluster
   * slot, so one Lua script may touch them all.
   */
  slotted(kind: string, id: string | number, ...parts: (string | number)[]): string;
  /** The glob that matches every key of a kind (for SCAN on the slow paths only). */
  pattern(kind: string, ...parts: (string | number)[]): string;
}

const SEGMENT = /^[\w.\-]+$/;

/** Braces inside an id would end the hash tag early; `%` is escaped so the mapping stays one-to-one. */
function escapeTag(id: string): string {
  return id.replace(/[%{}]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Glob metacharacters in a part would widen a SCAN pattern beyond what the caller meant. */
function escapeGlob(part: string): string {
  return part.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

export function keySchema({ app = 'edge', env = 'dev' }: KeySchemaOptions = {}): KeySchema {
  for (const [name, value] of [['app', app], ['env', env]] as const) {
    if (!SEGMENT.test(value)) throw new TypeError(`keySchema: ${name} must match ${SEGMENT}, got "${value}"`);
  }
  const prefix = `${app}:${env}`;
  const join = (parts: (string | number)[]) => parts.map(String).join(':');
  return {
    prefix,
    key: (kind, ...parts) => (parts.length ? `${prefix}:${kind}:${join(parts)}` : `${prefix}:${kind}`),
    slotted: (kind, id, ...parts) => `${prefix}:${kind}:{${escapeTag(String(id))}}${parts.length ? `:${join(parts)}` : ''}`,
    pattern: (kind, ...parts) => `${prefix}:${kind}:${parts.map((p) => escapeGlob(String(p))).join(':')}${parts.length ? ':' : ''}*`,
  };
}
