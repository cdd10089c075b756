// End-to-end test of the generated client against a running node (`npm test` after
// `npm run build`). The Rust test `tests/tests/ts_client.rs` starts nats-server and a node
// and runs it; by hand, set the variables below against any node.
//
//   EQ_BASE_URL        e.g. http://127.0.0.1:8080
//   EQ_ADMIN_TOKEN     role admin, scope `*` (registers the machine)
//   EQ_OPERATOR_TOKEN  role operator, scope `<EQ_SITE>/<EQ_LINE>` (sets the status)
//   EQ_VIEWER_TOKEN    role viewer (watches live; must not set the status)
//   EQ_SITE, EQ_LINE   where the test machine is registered (default plant-a / line-1)

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { type Client, createClient, createConfig } from '../src/generated/client/index.js';
import {
  getEquipment,
  getHistory,
  type HistoryEntry,
  type LiveEvent,
  registerEquipment,
  setStatus,
  watchLive,
} from '../src/generated/index.js';

const WAIT_MS = 20_000;

function env(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (!value) throw new Error(`set ${name}`);
  return value;
}

const baseUrl = env('EQ_BASE_URL');
const site = env('EQ_SITE', 'plant-a');
const line = env('EQ_LINE', 'line-1');

/** A client that sends `token` as `Authorization: Bearer` (never as `access_token` in the
 * URL: `watchLive` also accepts that scheme, and the client would fill in both). */
function clientWith(token: string | undefined): Client {
  return createClient(
    createConfig({
      baseUrl,
      auth: (scheme) => (scheme.type === 'http' ? token : undefined),
    }),
  );
}

const admin = clientWith(env('EQ_ADMIN_TOKEN'));
const operator = clientWith(env('EQ_OPERATOR_TOKEN'));
const viewer = clientWith(env('EQ_VIEWER_TOKEN'));
// The token never travels in a URL (proxies log URLs).
const urls: string[] = [];
viewer.interceptors.request.use((request) => {
  urls.push(request.url);
  return request;
});
const anonymous = clientWith(undefined);

function assertProblem(response: Response, status: number): void {
  assert.equal(response.status, status);
  assert.match(response.headers.get('content-type') ?? '', /^application\/problem\+json/);
}

async function until<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

type Frame = { event: string; id?: string; data: LiveEvent };

/** Collects the frames of a live stream; `next` waits for the next one. */
class Frames {
  private readonly frames: Frame[] = [];
  private wake: (() => void) | undefined;

  push(frame: Frame): void {
    this.frames.push(frame);
    this.wake?.();
  }

  async next(what: string): Promise<Frame> {
    const deadline = Date.now() + WAIT_MS;
    while (this.frames.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.frames.shift()!;
  }
}

test('a tablet sets a status safely, reads the history and watches it live', { timeout: 90_000 }, async () => {
  const id = `ts-client-${randomUUID().slice(0, 8)}`;

  // Register (supervisor or admin).
  const registered = await registerEquipment({
    client: admin,
    body: { id, name: `Machine ${id}`, site, line, tags: ['ts-client'] },
  });
  assert.equal(registered.response.status, 201, JSON.stringify(registered.error));
  assert.equal(registered.data?.version, 1);
  assert.equal(registered.data?.status, 'yellow');

  // Read it: the ETag is the version, for If-Match.
  const current = await getEquipment({ client: operator, path: { id } });
  assert.equal(current.response.status, 200, JSON.stringify(current.error));
  const etag = current.response.headers.get('etag');
  assert.equal(etag, '"1"');

  // Set the status with If-Match and an Idempotency-Key.
  const key = randomUUID();
  const request = {
    client: operator,
    path: { id },
    headers: { 'If-Match': etag, 'Idempotency-Key': key },
    body: { status: 'red' as const, reason: 'jam', note: 'clay in the mould' },
  };
  const first = await setStatus(request);
  assert.equal(first.response.status, 200, JSON.stringify(first.error));
  assert.equal(first.data?.status, 'red');
  assert.equal(first.data?.version, 2);
  assert.equal(first.response.headers.get('etag'), '"2"');
  assert.equal(first.response.headers.get('idempotent-replayed'), null);

  // The same request again (a retry after a lost answer): the same answer, nothing written.
  const retry = await setStatus(request);
  assert.equal(retry.response.status, 200, JSON.stringify(retry.error));
  assert.equal(retry.response.headers.get('idempotent-replayed'), 'true');
  assert.deepEqual(retry.data, first.data);
  const after = await getEquipment({ client: operator, path: { id } });
  assert.equal(after.data?.version, 2, 'a replayed command does not add a version');

  // A change based on a version that moved on: 412 problem.
  const stale = await setStatus({
    client: operator,
    path: { id },
    headers: { 'If-Match': etag, 'Idempotency-Key': randomUUID() },
    body: { status: 'green' },
  });
  assert.equal(stale.data, undefined);
  assertProblem(stale.response, 412);
  assert.equal(stale.error?.code, 'version_mismatch');
  assert.equal(stale.error?.status, 412);

  // No token: 401. A viewer may not set a status: 403.
  const noToken = await getEquipment({ client: anonymous, path: { id } });
  assertProblem(noToken.response, 401);
  assert.equal(noToken.error?.code, 'token_missing');
  assert.match(noToken.response.headers.get('www-authenticate') ?? '', /^Bearer /);
  const asViewer = await setStatus({ client: viewer, path: { id }, body: { status: 'green' } });
  assertProblem(asViewer.response, 403);
  assert.equal(asViewer.error?.code, 'role_forbidden');
  const version = await getEquipment({ client: viewer, path: { id } });
  assert.equal(version.data?.version, 2, 'refused changes change nothing');

  // The history, once the history consumer has written both versions.
  const items = await until<HistoryEntry[]>('versions 1 and 2 in the history', async () => {
    const page = await getHistory({ client: viewer, path: { id } });
    assert.equal(page.response.status, 200, JSON.stringify(page.error));
    return page.data && page.data.items.length >= 2 ? page.data.items : undefined;
  });
  assert.deepEqual(
    items.map((i) => i.version),
    [1, 2],
  );
  assert.equal(items[0]?.kind, 'registered');
  assert.equal(items[1]?.kind, 'status_changed');
  assert.equal(items[1]?.status, 'red');
  assert.equal(items[1]?.previous_status, 'yellow');
  assert.equal(items[1]?.reason, 'jam');
  assert.equal(items[1]?.command_id, key);

  // Live: a snapshot of the machine, `ready`, then a change made after it.
  const frames = new Frames();
  const abort = new AbortController();
  const { stream } = await watchLive({
    client: viewer,
    query: { id },
    signal: abort.signal,
    sseMaxRetryAttempts: 1,
    onSseEvent: (event) => {
      // Keep-alive comments come through without data.
      if (event.event && event.data !== undefined) {
        frames.push({ event: event.event, id: event.id, data: event.data });
      }
    },
    onSseError: (error) => {
      if (!abort.signal.aborted) console.error('live stream error:', error);
    },
  });
  // The generator only reads while it is consumed.
  const reading = (async () => {
    for await (const _ of stream) {
      // Frames arrive through onSseEvent, with their event type.
    }
  })();
  try {
    const snapshot = await frames.next('the snapshot');
    assert.equal(snapshot.event, 'snapshot');
    assert.equal(snapshot.data.equipment?.id, id);
    assert.equal(snapshot.data.equipment?.version, 2);
    assert.equal(snapshot.data.equipment?.status, 'red');
    const ready = await frames.next('ready');
    assert.equal(ready.event, 'ready');
    assert.equal(ready.id, String(ready.data.seq));

    const changed = await setStatus({
      client: operator,
      path: { id },
      headers: { 'If-Match': '"2"', 'Idempotency-Key': randomUUID() },
      body: { status: 'green' },
    });
    assert.equal(changed.response.status, 200, JSON.stringify(changed.error));

    const change = await frames.next('the change');
    assert.equal(change.event, 'change');
    assert.equal(change.id, String(change.data.seq));
    assert.ok(change.data.seq > ready.data.seq);
    assert.equal(change.data.kind, 'status_changed');
    assert.equal(change.data.previous_status, 'red');
    assert.equal(change.data.equipment?.status, 'green');
    assert.equal(change.data.equipment?.version, 3);
  } finally {
    abort.abort();
    await reading;
  }
  assert.ok(urls.some((url) => new URL(url).pathname === '/v1/live'));
  for (const url of urls) {
    assert.ok(!new URL(url).searchParams.has('access_token'), `token in the URL: ${url}`);
  }
});
