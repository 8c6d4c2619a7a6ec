/**
 * A Worker built on edge-redis the way its users build one: the package installed from npm (here,
 * from the packed tarball), imported by name, with its types checked under `strict`.
 *
 * - GET /greeting: cache-aside (MISS, then HIT), `X-Cache` / `Age` from `cacheHeaders`.
 * - GET /limited: 2 requests a minute per client address, then 429 problem+json.
 * - POST /visits: a session counter (cookie `sid`).
 * - POST /locks/:name: a fenced lock, acquired and released.
 * - GET /down: a lock on a Redis that is not there: 503 problem+json from `onEdgeRedisError`.
 */
import { Hono } from 'hono';
import { createRedis, keySchema, type KeySchema } from 'edge-redis';
import { createCache, type Cache } from 'edge-redis/cache';
import { cacheHeaders, onEdgeRedisError, rateLimit, session, type SessionVariables } from 'edge-redis/hono';
import { createLocks, type Locks } from 'edge-redis/lock';
import { createRatelimit, type Limiter } from 'edge-redis/ratelimit';
import { createSessionStore, type SessionStore } from 'edge-redis/session';

interface Services {
  keys: KeySchema;
  cache: Cache;
  limiter: Limiter;
  sessions: SessionStore;
  locks: Locks;
}

// Built once per env (no I/O: a client sends nothing until a command).
const built = new WeakMap<Env, Services>();
function services(env: Env): Services {
  let s = built.get(env);
  if (!s) {
    const redis = createRedis(env, { batch: 'task' });
    const keys = keySchema({ app: 'consumer', env: 'test' });
    s = {
      keys,
      cache: createCache({ redis, keys, defaults: { ttl: 60_000 } }),
      limiter: createRatelimit({ redis, keys, name: 'demo', algorithm: 'slidingLog', limit: 2, windowMs: 60_000 }),
      sessions: createSessionStore({ redis, keys }),
      locks: createLocks({ redis, keys }),
    };
    built.set(env, s);
  }
  return s;
}

type AppEnv = { Bindings: Env; Variables: SessionVariables<{ visits: number }> };

const app = new Hono<AppEnv>();
app.onError(onEdgeRedisError);

app.get('/greeting', async (c) => {
  // Without `ctx` the write after a miss is awaited (with `ctx: c.executionCtx` it runs in waitUntil).
  const r = await services(c.env).cache.getOrLoad('greeting', () => ({ hello: 'world' }));
  return c.json(r.value, 200, cacheHeaders(r));
});

app.get('/limited', rateLimit<AppEnv>({ limiter: (c) => services(c.env).limiter }), (c) => c.text('ok'));

app.post('/visits', session<{ visits: number }, AppEnv>({ store: (c) => services(c.env).sessions, cookie: { name: 'sid', secure: false } }), async (c) => {
  const visits = ((await c.var.session.get('visits')) ?? 0) + 1;
  c.var.session.set('visits', visits);
  return c.json({ visits });
});

app.post('/locks/:name', async (c) => {
  await using lock = await services(c.env).locks.acquire(c.req.param('name'), { leaseMs: 5_000 });
  return lock ? c.json({ fence: lock.fence }) : c.json({ busy: true }, 409);
});

app.get('/down', async (c) => {
  const locks = createLocks({ redis: createRedis({ UPSTASH_REDIS_REST_URL: c.env.DOWN_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN: 'x' }, { retries: 0 }), keys: keySchema() });
  await locks.acquire('anything');
  return c.text('unreachable');
});

export default app;
