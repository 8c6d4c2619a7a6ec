// redis-errors ships no types; ioredis raises its ReplyError for every error reply from Redis.
declare module 'redis-errors' {
  class ReplyError extends Error {}
  const errors: { ReplyError: typeof ReplyError };
  export default errors;
}
