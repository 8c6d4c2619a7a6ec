/**
 * The Redis ACL users that carry a token's policy into scripts (see policy.ts for the rules).
 *
 * One user per distinct set of rules, named after a hash of the rules (`edge-gateway-<hash>`), so
 * every gateway replica and every restart with the same policy lands on the same user. Each gateway
 * process adds a random password of its own (`>pw`, never `resetpass`, so replicas do not lock each
 * other out) and removes it on a clean shutdown. Passwords of gateways that crashed stay behind; once
 * a user has more than {@link MAX_PASSWORDS}, the next gateway to start resets them, and the others
 * add theirs back the next time one of their connections fails to authenticate.
 * The rules are re-applied after every reconnect, so a Redis restarted without its ACL, or a
 * replica promoted by Sentinel, gets the users again.
 */
import { createHash } from 'node:crypto';
import { Cluster } from 'ioredis';
import { isReplyError, type Client } from './connect.ts';

const MAX_PASSWORDS = 32;

export function aclUserName(rules: readonly string[]): string {
  return `edge-gateway-${createHash('sha256').update(rules.join(' ')).digest('hex').slice(0, 16)}`;
}

/** The nodes an ACL change must reach: every master of a Cluster (ACLs are per node), else the one server. */
function targets(client: Client): Client[] {
  return client instanceof Cluster ? client.nodes('master') : [client];
}

/** `true` when Redis refused because the gateway's user lacks the right, or has no ACL (Redis < 6). */
function isNoRight(err: unknown): boolean {
  return isReplyError(err) && /^(NOPERM|ERR unknown command|ERR unknown subcommand)/i.test(err.message);
}

function passwordCount(reply: unknown): number {
  if (!Array.isArray(reply)) return 0;
  for (let i = 0; i + 1 < reply.length; i += 2) {
    if (String(reply[i]) === 'passwords' && Array.isArray(reply[i + 1])) return (reply[i + 1] as unknown[]).length;
  }
  return 0;
}

export class AclUsers {
  readonly #password: string;
  /** Users whose stale passwords this process has already checked. */
  readonly #checked = new Set<string>();

  constructor(password: string) {
    this.#password = password;
  }

  get password(): string {
    return this.#password;
  }

  /**
   * Creates or updates `name` with `rules` and this process's password on every node.
   * Resolves `false` when the gateway's Redis user may not manage ACLs; throws on a connection failure.
   */
  async ensure(admin: Client, name: string, rules: readonly string[]): Promise<boolean> {
    try {
      for (const node of targets(admin)) {
        let reset: string[] = [];
        if (!this.#checked.has(name)) {
          const info = await node.call('ACL', 'GETUSER', name);
          if (passwordCount(info) >= MAX_PASSWORDS) reset = ['resetpass'];
        }
        await node.call('ACL', 'SETUSER', name, ...rules, ...reset, `>${this.#password}`);
      }
      this.#checked.add(name);
      return true;
    } catch (err) {
      if (isNoRight(err)) return false;
      throw err;
    }
  }

  /** Removes this process's password from `name` (on shutdown); errors are ignored. */
  async forget(admin: Client, name: string): Promise<void> {
    for (const node of targets(admin)) {
      await node.call('ACL', 'SETUSER', name, `<${this.#password}`).catch(() => undefined);
    }
  }
}
