/**
 * The README's command lists are generated from Redis's own command table (`npm run docs:gateway`);
 * this fails when they no longer match what the gateway decides against the test Redis, and checks
 * a few verdicts the lists promise.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Redis } from 'ioredis';
import { currentBlock, renderCommandLists } from '../../gateway/command-docs.ts';
import { parseCommandTable, versionOf, type CommandTable } from '../../gateway/command-table.ts';
import { compilePolicy } from '../../gateway/policy.ts';
import { redisUrl } from './helpers.ts';
import { direct } from './processes.ts';

let look: Redis;
let table: CommandTable;
beforeAll(async () => {
  look = direct(redisUrl());
  table = parseCommandTable(await look.call('COMMAND'), versionOf(String(await look.call('INFO', 'server'))));
});
afterAll(() => {
  look.disconnect();
});

describe('the README\'s generated command lists', () => {
  test('match the lists rendered from the test Redis\'s COMMAND table (else: npm run docs:gateway)', () => {
    const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
    expect(currentBlock(readme), 'README.md is out of date: run `npm run docs:gateway` and commit README.md').toBe(renderCommandLists(table));
  });

  test('the verdicts behind them', () => {
    const token = { name: 't', token: 't', redisUrl: redisUrl(), readonly: false };
    const policy = compilePolicy(table, token, { allowAdminCommands: false, db: 0 }, 'acl');
    const v = (name: string, sub?: string) => policy.verdict(name, sub === undefined ? undefined : Buffer.from(sub));
    expect(v('FLUSHALL').admin).toMatch(/^NOPERM FLUSHALL is a server administration command/);
    expect(v('SLOWLOG', 'get').admin).toBeDefined();
    expect(v('CONFIG', 'GET').admin).toBeDefined();
    expect(v('KEYS').admin).toBeUndefined();
    expect(v('SORT').admin).toBeUndefined();
    expect(v('INFO')).toMatchObject({ lane: 'admin', shapeInfo: true });
    expect(v('SCRIPT', 'load').admin).toBeUndefined();
    expect(v('SCRIPT', 'LOAD\u017f').admin).toBeUndefined(); // not a subcommand: Redis answers it
    expect(v('REPLCONF').admin).toBeDefined();
    const admin = compilePolicy(table, token, { allowAdminCommands: true, db: 0 }, 'unrestricted');
    expect(admin.verdict('REPLCONF', undefined).refuse).toMatch(/^NOPERM REPLCONF is never allowed/);
    expect(admin.verdict('SCRIPT', Buffer.from('debug')).refuse).toMatch(/^NOPERM SCRIPT DEBUG is never allowed/);
    expect(admin.verdict('FLUSHALL', undefined)).toMatchObject({ lane: 'token' });
    expect(admin.verdict('FLUSHALL', undefined).refuse).toBeUndefined();
    // The ACL user of the default policy grants GET and EVAL, never FLUSHALL, INFO or SELECT.
    expect(policy.aclRules).toEqual(expect.arrayContaining(['-@all', '+get', '+eval', '+evalsha', '+script|load']));
    expect(policy.aclRules).not.toEqual(expect.arrayContaining(['+flushall']));
    expect(policy.aclRules?.some((r) => /^\+(info|select|copy|move|swapdb|flushdb)\b/.test(r))).toBe(false);
  });
});
