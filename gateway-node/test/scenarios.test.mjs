// Runs every shared scenario (scenarios/*.json at the repository root) through the Node
// binding: a MockUpstream with the scenario's behaviour, a Gateway from its config, the request
// in-process, the whole body read chunk by chunk, then the expectations, including exactly one
// usage record.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Gateway, MockUpstream } from '../index.mjs';
import { headerMismatches, loadScenarios, sseEvents, subsetMismatches, substitute } from './scenario-lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
// LLM_GATEWAY_SCENARIOS_DIR runs another folder of scenario files (e.g. while writing new ones).
const dir = process.env.LLM_GATEWAY_SCENARIOS_DIR || path.resolve(here, '..', '..', 'scenarios');
const scenarios = loadScenarios(dir);

/** How long a usage record may take to arrive, and how long to watch for a second one. */
const RECORD_TIMEOUT_MS = 5000;
const SECOND_RECORD_WINDOW_MS = 100;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForRecord(records) {
  const deadline = Date.now() + RECORD_TIMEOUT_MS;
  while (records.length === 0 && Date.now() < deadline) await sleep(5);
  // A second record for the same request would be a bug; give it a moment to show up.
  await sleep(SECOND_RECORD_WINDOW_MS);
}

test('the scenarios folder has scenarios', () => {
  assert.ok(scenarios.length > 0, `no scenario files in ${dir}`);
});

for (const scenario of scenarios) {
  test(`scenario ${scenario.name} (${scenario.file})`, async () => {
    const mock = await MockUpstream.start({ behavior: scenario.mock });
    try {
      const gw = new Gateway(substitute(scenario.config, mock.url));
      const records = [];
      gw.onUsage((r) => records.push(r));

      const req = scenario.request;
      const body = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body), 'utf8');
      const resp = await gw.request({ method: req.method || 'POST', path: req.path, headers: req.headers || {}, body });
      const chunks = [];
      for await (const chunk of resp.body) chunks.push(Buffer.from(chunk));
      const text = Buffer.concat(chunks).toString('utf8');

      const expect = scenario.expect;
      const problems = [];
      if (resp.status !== expect.status) problems.push(`status: expected ${expect.status}, got ${resp.status}`);
      if (expect.headers) problems.push(...headerMismatches(expect.headers, resp.headers));
      if (expect.json !== undefined) {
        let json;
        try {
          json = JSON.parse(text);
        } catch (err) {
          problems.push(`json: the body is not JSON (${err.message})`);
        }
        if (json !== undefined) problems.push(...subsetMismatches(expect.json, json, 'json'));
      }
      if (expect.sse_events) {
        const events = sseEvents(text);
        try {
          assert.deepStrictEqual(events, expect.sse_events);
        } catch {
          problems.push(`sse_events: expected ${JSON.stringify(expect.sse_events)}, got ${JSON.stringify(events)}`);
        }
      }
      for (const needle of expect.body_contains || []) {
        if (!text.includes(needle)) problems.push(`body_contains: ${JSON.stringify(needle)} not in the body`);
      }

      await waitForRecord(records);
      if (records.length !== 1) {
        problems.push(`usage: expected exactly one record, got ${records.length}: ${JSON.stringify(records)}`);
      } else if (expect.usage) {
        problems.push(...subsetMismatches(expect.usage, records[0], 'usage'));
      }
      assert.deepEqual(problems, [], `${scenario.file}\nbody: ${text.slice(0, 2000)}`);
    } finally {
      await mock.stop();
    }
  });
}
