// Bundles the dashboard's browser code (preact, cytoscape, uPlot) into dist/dashboard/ui at build
// time, so the page loads nothing from the internet. Run by the package's `build` script.
import { copyFile, mkdir } from 'node:fs/promises';
import { build } from 'esbuild';

const out = new URL('../dist/dashboard/ui/', import.meta.url);
await mkdir(out, { recursive: true });
await build({
  entryPoints: [new URL('./main.tsx', import.meta.url).pathname],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outfile: new URL('app.js', out).pathname,
  loader: { '.css': 'css' },
  logLevel: 'warning',
  legalComments: 'linked',
});
await copyFile(new URL('./index.html', import.meta.url), new URL('index.html', out));
