/**
 * Starts the dev stack once for the browser suite (test/browser/stack.ts) and provides its URL.
 * Chromium is looked for first, so a machine without one fails before anything starts.
 */
import type { TestProject } from 'vitest/node';
import { chromiumPath, startDevStack } from './stack.ts';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  chromiumPath();
  process.stdout.write('browser tests: starting npm run dev (D1 migrations, redis-server, gateway, wrangler dev)…\n');
  const stack = await startDevStack();
  process.stdout.write(`browser tests: app at ${stack.url}\n`);
  project.provide('appUrl', stack.url);
  return () => stack.stop();
}
