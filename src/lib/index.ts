/**
 * `edge-redis`: the foundation every pattern shares — the error family, the key schema and the
 * Redis client factory. Each pattern has its own entry (`edge-redis/cache`, `/ratelimit`,
 * `/session`, `/lock`, `/idempotency`, `/writebehind`, `/leaderboard`, `/pubsub`,
 * `/login-throttle`), the Hono adapters theirs (`edge-redis/hono`).
 *
 * @example
 * import { createRedis, EdgeRedisError, keySchema } from 'edge-redis';
 * const redis = createRedis(env, { batch: 'task' });
 * const keys = keySchema({ app: 'shop', env: 'prod' });
 */
export * from './errors.ts';
export { keySchema, type KeySchema, type KeySchemaOptions } from './keys.ts';
export { classifyRedisError, createRedis, DEFAULT_REDIS_RETRIES, DEFAULT_REDIS_TIMEOUT_MS, type CreateRedisOptions, type RedisClient, type RedisCommands, type RedisEnv, type RedisFailure } from './redis.ts';
