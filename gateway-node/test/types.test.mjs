// index.d.ts type-checks, and describes the API as it is used (test/types/usage.ts).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

test('index.d.ts compiles under tsc --strict with the usage file', () => {
  const tsc = require.resolve('typescript/bin/tsc');
  const run = spawnSync(process.execPath, [tsc, '-p', path.join(here, 'types', 'tsconfig.json')], { encoding: 'utf8' });
  assert.equal(run.status, 0, `tsc failed:\n${run.stdout}${run.stderr}`);
});

test('every runtime export is declared in index.d.ts', async () => {
  const { readFileSync } = await import('node:fs');
  const dts = readFileSync(path.join(here, '..', 'index.d.ts'), 'utf8');
  const exported = Object.keys(require('../index.js'));
  const missing = exported.filter((name) => !new RegExp(`export declare (class|function|const) ${name}\\b`).test(dts));
  assert.deepEqual(missing, []);
});
