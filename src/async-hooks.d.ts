/**
 * The one part of `node:async_hooks` the Worker uses (src/services.ts), which workerd provides
 * under nodejs_compat (on by default at this compatibility date). Declared here because the Worker's
 * types are the Workers runtime's, not Node's (tsconfig.json "types": []); test/tsconfig.json also
 * sees @types/node's fuller declaration, and the two agree on what is declared here.
 */
declare module 'node:async_hooks' {
  export class AsyncLocalStorage<T> {
    run<R>(store: T, callback: () => R): R;
    getStore(): T | undefined;
  }
}
