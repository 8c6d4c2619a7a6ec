/**
 * `npm run test:browser`: the pages in a real headless Chromium (test/browser/). Node environment;
 * test/browser/global-setup.ts starts `npm run dev` once. One file at a time: they share the stack.
 */
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    name: 'browser',
    environment: 'node',
    include: ['test/browser/**/*.test.ts'],
    globalSetup: ['./test/browser/global-setup.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 180_000,
    onConsoleLog: (log: string) => !log.startsWith('{"msg":"request"'),
  },
});
