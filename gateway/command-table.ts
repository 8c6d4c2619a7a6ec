/**
 * Redis's own command table, as the server describes it in its `COMMAND` reply: for every command
 * and subcommand its flags (`readonly`, `write`, `admin`, `noscript`, `blocking`, …) and ACL
 * categories (`@admin`, `@dangerous`, `@scripting`, …). The gateway reads it from each Redis at
 * start-up and after every reconnect, so its policy follows the server it talks to (a newer Redis,
 * a module's commands) instead of a list kept by hand.
 *
 * Names here are upper-case; a subcommand's name is `PARENT SUB` (`SCRIPT LOAD`), the form used in
 * tokens files and error messages. Redis's own `parent|sub` form is produced by {@link aclName}.
 */

export interface CommandEntry {
  /** `GET`, or `SCRIPT LOAD` for a subcommand. */
  name: string;
  flags: ReadonlySet<string>;
  /** ACL categories without the `@`: `admin`, `dangerous`, `read`, … */
  categories: ReadonlySet<string>;
  /** Present on container commands (`SCRIPT`, `CLIENT`, …): subcommand (upper-case) → entry. */
  subcommands?: ReadonlyMap<string, CommandEntry>;
}

export class CommandTableError extends Error {
  override name = 'CommandTableError';
}

export interface CommandTable {
  /** The server's version (`redis_version`), shown in the README's generated lists. */
  version: string;
  /** Top-level commands by upper-case name. */
  commands: ReadonlyMap<string, CommandEntry>;
}

function text(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('latin1');
  return undefined;
}

function texts(value: unknown): string[] {
  if (!Array.isArray(value)) return [];
  return value.map(text).filter((v): v is string => v !== undefined);
}

/**
 * One entry of the `COMMAND` reply. Redis 6 sends 7 fields (name, arity, flags, first key, last
 * key, step, ACL categories); Redis 7 adds tips, key specs and subcommands (entries of the same shape).
 */
function parseEntry(raw: unknown, parent: string | undefined): CommandEntry {
  if (!Array.isArray(raw) || raw.length < 6) throw new CommandTableError('COMMAND returned an entry that is not a command description');
  const rawName = text(raw[0]);
  if (rawName === undefined || rawName === '') throw new CommandTableError('COMMAND returned an entry without a name');
  // A subcommand is named `parent|sub` by Redis 7.
  const upper = rawName.toUpperCase();
  const name = parent === undefined ? upper : `${parent} ${upper.slice(upper.indexOf('|') + 1)}`;
  const flags = new Set(texts(raw[2]).map((f) => f.toLowerCase()));
  const categories = new Set(texts(raw[6]).map((c) => c.replace(/^@/, '').toLowerCase()));
  const entry: CommandEntry = { name, flags, categories };
  const subs = raw[9];
  if (Array.isArray(subs) && subs.length > 0) {
    const map = new Map<string, CommandEntry>();
    for (const s of subs) {
      const sub = parseEntry(s, name);
      map.set(sub.name.slice(name.length + 1), sub);
    }
    entry.subcommands = map;
  }
  return entry;
}

/** Parses the reply of `COMMAND` (no arguments); `version` comes from `INFO server`. */
export function parseCommandTable(reply: unknown, version: string): CommandTable {
  if (!Array.isArray(reply) || reply.length === 0) throw new CommandTableError('COMMAND returned no commands');
  const commands = new Map<string, CommandEntry>();
  for (const raw of reply) {
    const entry = parseEntry(raw, undefined);
    commands.set(entry.name, entry);
  }
  return { version, commands };
}

/** Every command that is not a container, and every subcommand: what a policy decides about. */
export function* leaves(table: CommandTable): Generator<CommandEntry> {
  for (const entry of table.commands.values()) {
    if (entry.subcommands) yield* entry.subcommands.values();
    else yield entry;
  }
}

/** `SCRIPT LOAD` → `script|load`, `GET` → `get`: the name `ACL SETUSER` takes. */
export function aclName(name: string): string {
  return name.toLowerCase().replace(' ', '|');
}

/** `redis_version` out of an `INFO server` reply. */
export function versionOf(info: string): string {
  return /^redis_version:([^\r\n]+)/m.exec(info)?.[1] ?? 'unknown';
}
