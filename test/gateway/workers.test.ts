/**
 * GATEWAY_WORKERS=2: two gateway processes on one port, as `npm run gateway` starts them. What must
 * hold is that it behaves as one gateway: requests reach both processes, `/metrics` counts them all
 * whichever process answers the scrape, a flagged script's warm EVALSHA works on either (the alias
 * map is in Redis), a dead worker is replaced, and SIGTERM stops every process.
 */
import { createHash, randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startRedisServer, type RedisProcess } from '../support/redis-process.ts';
import { errorOf, eventually, metric, post, show } from './helpers.ts';
import { childGateway, type ChildGateway } from './processes.ts';

let server: RedisProcess;
let gw: ChildGateway;
beforeAll(async () => {
  server = await startRedisServer();
  gw = await childGateway({ REDIS_URL: server.url, GATEWAY_WORKERS: '2' });
}, 30_000);
afterAll(async () => {
  await gw.stop();
  await server.stop();
});

/**
 * A request on a connection of its own (fetch would reuse pooled sockets, all to one worker): the
 * body, and the answering process's boot id (`upstash-sync-token` starts with it).
 */
function fresh(path: string, body?: unknown): Promise<{ text: string; bootId: string }> {
  return new Promise((resolve, reject) => {
    const method = body === undefined ? 'GET' : 'POST';
    const req = request(`${gw.url}${path}`, { method, agent: false, headers: { authorization: `Bearer ${gw.token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ text: Buffer.concat(chunks).toString('utf8'), bootId: String(res.headers['upstash-sync-token'] ?? '').split('-')[0] ?? '' }));
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** The processes that answered `n` PINGs. */
async function bootIds(n: number): Promise<Set<string>> {
  return new Set((await Promise.all(Array.from({ length: n }, () => fresh('/', ['PING'])))).map((a) => a.bootId));
}

describe('GATEWAY_WORKERS=2', () => {
  test('it says how many workers listen, and requests reach both processes', async () => {
    expect(gw.output.join('\n')).toMatch(/listening on http:\/\/\S+ \(2 workers, pids \d+, \d+\)/);
    await eventually(async () => expect((await bootIds(40)).size).toBe(2), { timeoutMs: 10_000 });
  });

  test('/metrics counts the requests of every worker, whichever one answers the scrape', async () => {
    const scrape = async () => {
      const { text, bootId } = await fresh('/metrics');
      return { bootId, count: metric(text, 'gateway_http_requests_total', { route: '/pipeline', status: '200' }) };
    };
    const before = (await scrape()).count;
    const sent = await Promise.all(Array.from({ length: 30 }, () => fresh('/pipeline', [['PING']])));
    expect(new Set(sent.map((s) => s.bootId)).size, 'the pipelines reached both workers').toBe(2);
    const scrapes = await Promise.all(Array.from({ length: 10 }, scrape));
    expect(new Set(scrapes.map((s) => s.bootId)).size, 'both workers answered scrapes').toBe(2);
    for (const s of scrapes) expect(s.count).toBe(before + 30);
  });

  test('a flagged script EVALed through one worker answers its warm EVALSHA on both', async () => {
    const script = `#!lua flags=allow-key-locking\nreturn '${randomUUID()}'`;
    const sha = createHash('sha1').update(script).digest('hex');
    const evaled = await post(gw, '/', ['EVAL', script, '0']);
    expect(errorOf(evaled), show(evaled)).toBeUndefined();
    const answers = await Promise.all(Array.from({ length: 30 }, () => post(gw, '/', ['EVALSHA', sha, '0'])));
    for (const a of answers) expect(a.json, show(a)).toEqual(evaled.json);
  });

  test('a worker that dies is replaced, and the gateway keeps answering', async () => {
    const pids = () => [...gw.output.join('\n').matchAll(/pids (\d+), (\d+)/g)].flatMap((m) => [Number(m[1]), Number(m[2])]);
    const [victim] = pids();
    expect(victim).toBeGreaterThan(0);
    process.kill(victim ?? 0, 'SIGKILL');
    await eventually(() => expect(gw.output.join('\n')).toMatch(new RegExp(`worker ${victim} exited \\(SIGKILL\\)`)), { timeoutMs: 5_000 });
    await eventually(async () => expect((await bootIds(40)).size).toBe(2), { timeoutMs: 15_000 });
  }, 30_000);

  test('SIGTERM stops every process: the primary exits 0 once its workers have', async () => {
    const workerPids = [...gw.output.join('\n').matchAll(/pids (\d+), (\d+)/g)].flatMap((m) => [Number(m[1]), Number(m[2])]);
    const code = await gw.signal('SIGTERM');
    expect(code).toBe(0);
    expect(gw.output.join('\n')).toMatch(/SIGTERM received, stopping \d workers/);
    for (const pid of workerPids) expect(() => process.kill(pid, 0)).toThrow();
  }, 20_000);
});
