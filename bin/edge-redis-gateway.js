#!/usr/bin/env node
// `edge-redis-gateway`: the package's Redis REST gateway, configured from the environment exactly
// like `npm run gateway` (gateway/main.ts, compiled to dist/gateway by `npm run build`).
import '../dist/gateway/main.js';
