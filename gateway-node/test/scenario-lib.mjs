// Reading and checking the shared binding scenarios (scenarios/*.json at the repository root;
// the format is described in scenarios/README.md).

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const TOP_KEYS = new Set(['name', 'description', 'config', 'mock', 'request', 'expect']);
const REQUEST_KEYS = new Set(['method', 'path', 'headers', 'body']);
const EXPECT_KEYS = new Set(['status', 'headers', 'json', 'sse_events', 'body_contains', 'usage']);

/** Every scenario file of `dir`, sorted by name, parsed and checked for shape (and that `name` is the file name). */
export function loadScenarios(dir) {
  let names;
  try {
    names = readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch (err) {
    if (err.code === 'ENOENT') return [];
    throw err;
  }
  return names.sort().map((file) => {
    const full = path.join(dir, file);
    const scenario = JSON.parse(readFileSync(full, 'utf8'));
    checkShape(scenario, file);
    if (`${scenario.name}.json` !== file) throw new Error(`${file}: name ${JSON.stringify(scenario.name)} differs from the file name`);
    return { file, ...scenario };
  });
}

function unknownKeys(obj, allowed) {
  return Object.keys(obj).filter((k) => !allowed.has(k));
}

function checkShape(s, file) {
  const problems = [];
  if (!s || typeof s !== 'object' || Array.isArray(s)) throw new Error(`${file}: not a JSON object`);
  for (const k of unknownKeys(s, TOP_KEYS)) problems.push(`unknown key ${k}`);
  if (typeof s.name !== 'string') problems.push('name must be a string');
  if (!s.config || typeof s.config !== 'object') problems.push('config must be an object');
  if (!s.request || typeof s.request !== 'object') problems.push('request must be an object');
  else {
    for (const k of unknownKeys(s.request, REQUEST_KEYS)) problems.push(`unknown key request.${k}`);
    if (typeof s.request.path !== 'string') problems.push('request.path must be a string');
  }
  if (!s.expect || typeof s.expect !== 'object') problems.push('expect must be an object');
  else {
    for (const k of unknownKeys(s.expect, EXPECT_KEYS)) problems.push(`unknown key expect.${k}`);
    if (typeof s.expect.status !== 'number') problems.push('expect.status must be a number');
  }
  if (problems.length) throw new Error(`${file}: ${problems.join('; ')}`);
}

/** A deep copy of `value` with `{{mock_url}}` replaced in every string. */
export function substitute(value, mockUrl) {
  if (typeof value === 'string') return value.split('{{mock_url}}').join(mockUrl);
  if (Array.isArray(value)) return value.map((v) => substitute(v, mockUrl));
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = substitute(v, mockUrl);
    return out;
  }
  return value;
}

/**
 * Where `actual` fails to contain `expected`: objects match as subsets, arrays need equal
 * length and match element-wise, scalars are equal. Returns a list of "path: why" strings.
 */
export function subsetMismatches(expected, actual, at = '$') {
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual)) return [`${at}: expected an array, got ${JSON.stringify(actual)}`];
    if (actual.length !== expected.length) {
      return [`${at}: expected ${expected.length} elements, got ${actual.length}: ${JSON.stringify(actual)}`];
    }
    return expected.flatMap((e, i) => subsetMismatches(e, actual[i], `${at}[${i}]`));
  }
  if (expected && typeof expected === 'object') {
    if (!actual || typeof actual !== 'object' || Array.isArray(actual)) {
      return [`${at}: expected an object, got ${JSON.stringify(actual)}`];
    }
    return Object.entries(expected).flatMap(([k, e]) =>
      k in actual ? subsetMismatches(e, actual[k], `${at}.${k}`) : [`${at}.${k}: missing`],
    );
  }
  return Object.is(expected, actual) || expected === actual
    ? []
    : [`${at}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`];
}

/**
 * The SSE event names of a stream body, in order; for an event with no `event:` line, its data:
 * `[DONE]` as is, a JSON payload's `object` field ("" when it has no string `object`).
 */
export function sseEvents(text) {
  const out = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    let name;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith('event:')) name = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (name !== undefined) out.push(name);
    else if (data.length) {
      const payload = data.join('\n');
      if (payload.trim() === '[DONE]') out.push('[DONE]');
      else {
        let parsed;
        try {
          parsed = JSON.parse(payload);
        } catch {
          parsed = undefined;
        }
        out.push(parsed && typeof parsed === 'object' && typeof parsed.object === 'string' ? parsed.object : '');
      }
    }
  }
  return out;
}

/** Response header mismatches: names case-insensitive, values as prefixes. */
export function headerMismatches(expected, actual) {
  const lower = {};
  for (const [k, v] of Object.entries(actual)) lower[k.toLowerCase()] = v;
  return Object.entries(expected).flatMap(([name, prefix]) => {
    const value = lower[name.toLowerCase()];
    if (value === undefined) return [`header ${name}: missing`];
    return String(value).startsWith(prefix) ? [] : [`header ${name}: ${JSON.stringify(value)} does not start with ${JSON.stringify(prefix)}`];
  });
}
