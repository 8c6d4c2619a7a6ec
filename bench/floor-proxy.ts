/**
 * The floor for `npm run bench:gateway:compare`: the least an HTTP → Redis proxy in Node can do.
 * node:http + ioredis (the gateway's own client), no auth, no checks, no encoding: `POST /` with a
 * JSON command array answers `{"result":…}`, `POST /pipeline` with an array of arrays answers
 * `[{"result":…}]`. Hand-written on purpose: a framework would add cost the floor must not have.
 *
 * Environment: `REDIS_URL` (required), `FLOOR_PORT` (default 0 = any free port). Prints
 * `floor: listening on http://127.0.0.1:<port>` once it accepts connections.
 */
import { createServer } from 'node:http';
import { Redis } from 'ioredis';

type Command = [string, ...string[]];

const redisUrl = process.env['REDIS_URL'];
if (redisUrl === undefined) {
  process.stderr.write('floor: REDIS_URL is required\n');
  process.exit(2);
}
const redis = new Redis(redisUrl);

function reply(res: import('node:http').ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    void (async () => {
      try {
        const body: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        if (req.url === '/pipeline') {
          const commands = body as Command[];
          const pipeline = redis.pipeline();
          for (const [name, ...args] of commands) void pipeline.call(name, ...args);
          const results = (await pipeline.exec()) ?? [];
          reply(res, 200, results.map(([err, result]) => (err ? { error: err.message } : { result })));
        } else {
          const [name, ...args] = body as Command;
          reply(res, 200, { result: await redis.call(name, ...args) });
        }
      } catch (err) {
        reply(res, 400, { error: err instanceof Error ? err.message : String(err) });
      }
    })();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env['FLOOR_PORT'] ?? 0), '127.0.0.1', () => {
  const address = server.address();
  const port = address !== null && typeof address === 'object' ? address.port : 0;
  process.stdout.write(`floor: listening on http://127.0.0.1:${port}\n`);
});
const stop = () => {
  server.close();
  redis.disconnect();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
