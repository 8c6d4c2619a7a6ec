/**
 * INFO as tokens other than fully trusted ones see it: without the server's paths, replication
 * peers' addresses, or other databases' key counts (another token's database may be among them).
 */

const HIDDEN = /^(executable|config_file|master_host|master_port|slave\d+|replica\d+):/;
const DB_LINE = /^db(\d+):/;

/** Drops the lines a restricted token must not see from an INFO reply. */
export function shapeInfo(reply: unknown, db: number): unknown {
  if (!Buffer.isBuffer(reply)) return reply;
  const lines = reply.toString('utf8').split('\r\n');
  const kept = lines.filter((line) => {
    if (HIDDEN.test(line)) return false;
    const m = DB_LINE.exec(line);
    return m === null || Number(m[1]) === db;
  });
  return Buffer.from(kept.join('\r\n'), 'utf8');
}
