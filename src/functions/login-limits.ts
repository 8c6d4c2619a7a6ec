/**
 * The login's limits (edge-redis/login-throttle, built in src/services.ts) as `POST /auth/login` uses them:
 * `LOGIN_RATE_LIMIT` failed attempts per 15 minutes per IP (IPv6 by /64) + lower-cased username, a
 * success clearing them; `LOGIN_ACCOUNT_LIMIT` failed attempts per hour per username from every
 * device not yet trusted; a device is trusted once it logged in to that account (the `did` cookie,
 * `__Host-did` in production, 30 days). The answers: 429 problem+json with `Retry-After` and the
 * `RateLimit` fields, naming which limit refused (`login` or `login-account`).
 */
import type { Context } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';
import type { AppEnv } from '../env.ts';
import { clientIp, rateLimitHeaders } from 'edge-redis/hono';
import type { Attempt, Gate } from 'edge-redis/login-throttle';
import type { PolicyState } from 'edge-redis/ratelimit';
import { AppError } from '../errors.ts';
import { LOGIN_LIMITS, type Services } from '../services.ts';

/** How long a device that logged in stays trusted (and its cookie lives). */
export const DEVICE_TRUST_MS = LOGIN_LIMITS.deviceTrustMs;

/** The device cookie: `__Host-did` (Secure) in production; `did` over plain http in development. */
export function deviceCookie(env: Env): { name: string; secure: boolean } {
  return env.APP_ENV === 'development' ? { name: 'did', secure: false } : { name: '__Host-did', secure: true };
}

/**
 * The RateLimit fields (edge-redis/hono's format) for the limits named: what is left of each and
 * when room frees (for one still open, `t` is its window: an upper bound).
 */
function fields({ limits: l }: Services, limits: { name: 'login' | 'login-account'; left: number; resetMs?: number }[]): Record<string, string> {
  const now = Date.now();
  const policies: PolicyState[] = limits.map(({ name, left, resetMs }) => {
    const [limit, windowMs] = name === 'login' ? [l.login, LOGIN_LIMITS.sourceWindowMs] : [l.loginAccount, LOGIN_LIMITS.accountWindowMs];
    return { name, success: left > 0 || resetMs === undefined, limit, remaining: Math.max(0, left), reset: now + (resetMs ?? windowMs), windowMs };
  });
  const binding = policies.reduce((a, b) => (b.remaining < a.remaining ? b : a));
  const failed = policies.filter((p) => !p.success).map((p) => p.name);
  return rateLimitHeaders({ success: failed.length === 0, limit: binding.limit, remaining: binding.remaining, reset: binding.reset, pending: Promise.resolve(), failed, policies }, false, now);
}

/**
 * Checks (and reserves) this login attempt: one round trip, which leaves with the session load the
 * route started. Refused: throws the 429. Redis down: throws the 503 (fails closed). The RateLimit
 * fields are set on the context (and answered, for an error response the route throws).
 */
export async function admitLogin(c: Context<AppEnv>, username: string): Promise<{ attempt: Attempt; headers: Record<string, string> }> {
  const s = c.var.services;
  const gate: Gate = await s.loginThrottle.check({
    account: username.toLowerCase(),
    source: clientIp(c),
    device: getCookie(c, deviceCookie(c.env).name),
  });
  if (gate.allowed) {
    const { source, account } = gate.attempt.remaining;
    const open: Parameters<typeof fields>[1] = [{ name: 'login', left: source }];
    if (account >= 0) open.push({ name: 'login-account', left: account });
    const headers = fields(s, open);
    for (const [k, v] of Object.entries(headers)) c.header(k, v);
    return { attempt: gate.attempt, headers };
  }
  const retryAfter = Math.max(1, Math.ceil(gate.retryAfterMs / 1000));
  const name = gate.by === 'account' ? 'login-account' : 'login';
  const detail = gate.by === 'account'
    ? `Too many failed logins for this account from unknown devices; retry in ${retryAfter} s (a device that logged in to it before is not held back).`
    : `Too many failed logins; retry in ${retryAfter} s.`;
  throw new AppError('rate_limited', {
    detail,
    headers: { ...fields(s, [{ name, left: 0, resetMs: gate.retryAfterMs }]), 'Retry-After': String(retryAfter) },
    extensions: { failed: [name], retryAfter },
  });
}

/** After a correct password: the attempt's failures cleared and the device trusted (its cookie set). */
export async function loginSucceeded(c: Context<AppEnv>, attempt: Attempt, alongside: Promise<unknown>): Promise<void> {
  const [token] = await Promise.all([attempt.succeeded(), alongside]);
  const { name, secure } = deviceCookie(c.env);
  setCookie(c, name, token, { httpOnly: true, secure, sameSite: 'Strict', path: '/', maxAge: Math.floor(DEVICE_TRUST_MS / 1000) });
}
