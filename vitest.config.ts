import { defineConfig } from 'vitest/config';

// One vitest run covers every workspace. Imports of @hypha/* resolve to the TypeScript sources
// through the `source` export condition, so unit tests never wait for a build; end-to-end tests
// that spawn the `hypha` CLI use the built `dist/` (npm test builds first).
export default defineConfig({
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'] } },
  test: {
    include: ['{shared,agent,waypoint,test,bench}/test/**/*.test.ts', 'test/e2e/**/*.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/src/summary-reporter.ts'],
  },
});
