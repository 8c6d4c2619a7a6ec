/**
 * Safe by default: wrangler.toml ships `APP_ENV = "production"`, so a Worker deployed by the
 * README's steps, with no vars changed, sets `__Host-` cookies with `Secure`. The rest of the suite
 * runs with APP_ENV=development explicitly (vitest.config.ts), as `npm run dev` does.
 */
import { describe, expect, inject, it } from 'vitest';
import { callWorker } from '../support/worker.ts';
import { PASSWORD, freshIp, register, shopEnv } from './auth.support.ts';

/** The env a deploy gets: the test bindings with APP_ENV as wrangler.toml ships it. */
const shipped: Env = { ...shopEnv, APP_ENV: inject('shippedAppEnv') };

const cookie = (res: Response, name: string) => res.headers.getSetCookie().find((l) => l.startsWith(`${name}=`));

describe('defaults of wrangler.toml', () => {
  it('ships production, not development', () => {
    expect(inject('shippedAppEnv')).toBe('production');
  });

  it('logs in with __Host- cookies that are Secure, HttpOnly, host-only and Path=/', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const res = await callWorker(shipped, '/auth/login', { method: 'POST', ip, body: JSON.stringify({ username: u.username, password: PASSWORD }), defaultContentType: 'application/json' });
    expect(res.status, res.text).toBe(200);
    expect(cookie(res.res, 'sid')).toBeUndefined();
    for (const name of ['__Host-sid', '__Host-did']) {
      const line = cookie(res.res, name);
      expect(line, `${name} in ${res.res.headers.getSetCookie().join(' | ')}`).toBeDefined();
      const attrs = line!.split(';').map((a) => a.trim().toLowerCase());
      expect(attrs).toContain('secure');
      expect(attrs).toContain('httponly');
      expect(attrs).toContain('path=/');
      expect(attrs.some((a) => a.startsWith('domain='))).toBe(false);
    }
    // The cookie it set is the one it reads back.
    const sid = /^__Host-sid=([^;]*)/.exec(cookie(res.res, '__Host-sid')!)![1]!;
    const me = await callWorker(shipped, '/auth/sessions', { ip, headers: { cookie: `__Host-sid=${sid}` } });
    expect(me.status, me.text).toBe(200);
  });
});
