// Unit tests of clients/js/sora-client.js in Node, with a scripted fetch and WebSocket: request
// shapes, error mapping, the shared socket, version filtering, reconnect with backoff and
// resubscribe. demo.test.mjs runs them before the browser tests.

import { SoraClient, SoraError, isTerminal } from '../../clients/js/sora-client.js';

const JOB_A = 'job_01JDQ8V5K7Z3M4N5P6Q7R8S9TA';
const JOB_B = 'job_01JDQ8V5K7Z3M4N5P6Q7R8S9TB';

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

function eq(a, b, message) {
  const ja = JSON.stringify(a);
  const jb = JSON.stringify(b);
  if (ja !== jb) throw new Error(`assertion failed: ${message}: ${ja} !== ${jb}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, what, ms = 2000) {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** A fetch that records requests and answers from a list of [status, body, headers]. */
function scriptedFetch(answers) {
  const calls = [];
  const fn = async (url, init = {}) => {
    calls.push({ url, method: init.method, headers: init.headers || {}, body: init.body });
    const next = answers.shift();
    if (!next) throw new Error('no scripted answer left');
    if (next instanceof Error) throw next;
    const [status, body, headers = {}] = next;
    const text = typeof body === 'string' ? body : body === undefined ? '' : JSON.stringify(body);
    return new Response(text === '' ? null : text, {
      status,
      headers: { 'Content-Type': 'application/json', ...headers },
    });
  };
  fn.calls = calls;
  return fn;
}

/** A WebSocket the test drives: it records what the client sends and opens/closes on demand. */
function scriptedSockets() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closed = false;
      sockets.push(this);
    }
    send(text) {
      if (this.closed) throw new Error('send on a closed socket');
      this.sent.push(JSON.parse(text));
    }
    close() {
      this.closed = true;
    }
    // Test side.
    open() {
      this.onopen && this.onopen({});
    }
    receive(obj) {
      this.onmessage && this.onmessage({ data: JSON.stringify(obj) });
    }
    drop(code = 1006) {
      this.closed = true;
      this.onclose && this.onclose({ code });
    }
  }
  return { FakeSocket, sockets };
}

const progress = (jobId, version, status, p, extra = {}) => ({
  type: 'progress', jobId, version, status, progress: p, message: status, ...extra,
});

export const clientTests = [];
const test = (name, fn) => clientTests.push({ name: `client: ${name}`, fn });

test('generate posts JSON with the bearer key and the idempotency key', async () => {
  const fetch = scriptedFetch([
    [202, { jobId: JOB_A, status: 'pending' }, { 'Idempotent-Replayed': 'true' }],
  ]);
  const c = new SoraClient({ baseUrl: 'http://api.test:8080', apiKey: 'k1', fetch });
  const created = await c.generate({ prompt: 'p', preset: 'draft' }, { idempotencyKey: 'idem-1' });
  eq(created, { jobId: JOB_A, status: 'pending', replayed: true }, 'the answer');
  const call = fetch.calls[0];
  eq(call.url, 'http://api.test:8080/api/generate', 'url');
  eq(call.method, 'POST', 'method');
  eq(call.headers.Authorization, 'Bearer k1', 'auth header');
  eq(call.headers['Idempotency-Key'], 'idem-1', 'idempotency header');
  eq(call.headers['Content-Type'], 'application/json', 'content type');
  eq(JSON.parse(call.body), { prompt: 'p', preset: 'draft' }, 'body');
});

test('status, jobs, cancel and presets build the documented requests', async () => {
  const fetch = scriptedFetch([[200, { jobId: JOB_A }], [200, { jobs: [], nextCursor: null }],
    [200, { cancelled: true }], [200, { presets: [] }]]);
  const c = new SoraClient({ baseUrl: 'http://api.test/prefix', apiKey: 'k', fetch });
  await c.status(JOB_A);
  await c.jobs({ status: 'completed', limit: 5, cursor: undefined });
  await c.cancel(JOB_A);
  await c.presets();
  eq(fetch.calls.map((x) => `${x.method} ${x.url}`), [
    `GET http://api.test/prefix/api/status?jobId=${JOB_A}&renderVersion=v3`,
    'GET http://api.test/prefix/api/jobs?status=completed&limit=5',
    `DELETE http://api.test/prefix/api/jobs/${JOB_A}`,
    'GET http://api.test/prefix/api/presets',
  ], 'requests');
  assert(!fetch.calls[3].headers.Authorization, 'presets need no key');
});

test('error bodies, network failures and non-JSON answers become SoraError', async () => {
  const fetch = scriptedFetch([
    [400, { error: { code: 'invalid_request', message: 'prompt: the prompt is required', field: 'prompt' } }],
    new TypeError('Failed to fetch'),
    [502, '<html>bad gateway</html>', { 'Content-Type': 'text/html' }],
  ]);
  const c = new SoraClient({ baseUrl: 'http://api.test', apiKey: 'k', fetch });
  const errs = [];
  for (const call of [() => c.generate({}), () => c.jobs(), () => c.status(JOB_A)]) {
    try {
      await call();
      errs.push(null);
    } catch (e) {
      errs.push(e);
    }
  }
  assert(errs.every((e) => e instanceof SoraError), 'all are SoraError');
  eq([errs[0].status, errs[0].code, errs[0].message, errs[0].field],
    [400, 'invalid_request', 'prompt: the prompt is required', 'prompt'], 'the service error');
  eq([errs[1].status, errs[1].code], [0, 'network_error'], 'the network error');
  assert(errs[1].message.includes('Failed to fetch'), 'the network error says why');
  eq([errs[2].status, errs[2].code], [502, 'http_502'], 'the non-JSON error');
  let thrown = null;
  try {
    await c.status('');
  } catch (e) {
    thrown = e;
  }
  assert(thrown instanceof SoraError && thrown.code === 'invalid_request', 'an empty job id is refused');
});

test('downloadUrl returns the signed link of a completed job, and says why otherwise', async () => {
  const signed = `http://api.test/api/download?jobId=${JOB_A}&variant=video&signature=s`;
  const fetch = scriptedFetch([
    [200, { jobId: JOB_A, status: 'in_progress', downloads: null }],
    [200, { jobId: JOB_A, status: 'completed', downloads: { video: { url: signed } }, filesDeleted: false }],
    [200, { jobId: JOB_A, status: 'completed', downloads: { video: { url: signed } }, filesDeleted: false }],
  ]);
  const c = new SoraClient({ baseUrl: 'http://api.test', apiKey: 'k', fetch });
  const e1 = await c.downloadUrl(JOB_A).catch((e) => e);
  assert(e1 instanceof SoraError && e1.code === 'not_completed', `not completed (${e1 && e1.code})`);
  eq(await c.downloadUrl(JOB_A), signed, 'the signed link');
  const e2 = await c.downloadUrl(JOB_A, 'spritesheet').catch((e) => e);
  assert(e2 instanceof SoraError && e2.code === 'variant_unavailable', 'no such variant');
});

test('devKey is null when the server has none (404)', async () => {
  const none = await SoraClient.devKey('http://api.test', {
    fetch: scriptedFetch([[404, { error: { code: 'not_found', message: 'no' } }]]),
  });
  eq(none, null, '404 gives null');
  const some = await SoraClient.devKey('http://api.test', {
    fetch: scriptedFetch([[200, { apiKey: 'dev', owner: 'demo', emulator: true }]]),
  });
  eq(some.apiKey, 'dev', 'the key');
});

test('one socket for every job; snapshots then newer versions only', async () => {
  const { FakeSocket, sockets } = scriptedSockets();
  const c = new SoraClient({ baseUrl: 'https://api.test', apiKey: 'k y', WebSocket: FakeSocket });
  const a = [];
  const b = [];
  const stopA = c.subscribe(JOB_A, (u) => a.push(u.version));
  c.subscribe(JOB_B, (u) => b.push(u.version));
  eq(sockets.length, 1, 'one socket');
  eq(sockets[0].url, 'wss://api.test/api/ws?token=k+y', 'wss URL with the token');
  sockets[0].open();
  eq(sockets[0].sent, [{ type: 'subscribe', jobId: JOB_A }, { type: 'subscribe', jobId: JOB_B }], 'both subscribed');
  const s = sockets[0];
  s.receive(progress(JOB_A, 2, 'queued', 0, { snapshot: true }));
  s.receive(progress(JOB_A, 4, 'in_progress', 40));
  s.receive(progress(JOB_A, 3, 'in_progress', 20)); // stale: dropped
  s.receive(progress(JOB_A, 4, 'in_progress', 40)); // duplicate: dropped
  s.receive(progress(JOB_B, 1, 'pending', 0, { snapshot: true }));
  s.receive({ type: 'pong' });
  s.receive('not json at all');
  eq(a, [2, 4], 'job A versions');
  eq(b, [1], 'job B versions');
  // A second watcher of A gets the latest at once.
  const late = [];
  c.subscribe(JOB_A, (u) => late.push(u.version));
  await sleep(0);
  eq(late, [4], 'the newcomer gets the latest');
  eq(sockets[0].sent.length, 2, 'no second subscribe for an already watched job');
  stopA();
  eq(sockets[0].sent.length, 2, 'A is still watched by the newcomer');
  c.close();
  assert(sockets[0].closed, 'close() closes the socket');
});

test('unsubscribing the last watcher sends unsubscribe', async () => {
  const { FakeSocket, sockets } = scriptedSockets();
  const c = new SoraClient({ baseUrl: 'http://api.test', apiKey: 'k', WebSocket: FakeSocket });
  const stop = c.subscribe(JOB_A, () => {});
  sockets[0].open();
  stop();
  stop(); // twice is harmless
  eq(sockets[0].sent.at(-1), { type: 'unsubscribe', jobId: JOB_A }, 'unsubscribe sent');
  eq(c.watching, [], 'nothing watched');
  c.close();
});

test('a dropped socket reconnects with exponential backoff and resubscribes every job', async () => {
  const { FakeSocket, sockets } = scriptedSockets();
  const c = new SoraClient({
    baseUrl: 'http://api.test',
    apiKey: 'k',
    WebSocket: FakeSocket,
    reconnect: { initialDelayMs: 5, maxDelayMs: 20, factor: 2, jitter: 0 },
  });
  const delays = [];
  c.onConnectionChange((state, d) => state === 'reconnecting' && d && d.delayMs !== undefined && delays.push(d.delayMs));
  const seen = [];
  c.subscribe(JOB_A, (u) => seen.push(`A${u.version}:${u.status}`));
  c.subscribe(JOB_B, (u) => seen.push(`B${u.version}:${u.status}`));
  sockets[0].open();
  sockets[0].receive(progress(JOB_A, 3, 'in_progress', 30, { snapshot: true }));
  sockets[0].receive(progress(JOB_B, 1, 'pending', 0, { snapshot: true }));

  // The connection drops, and the next three attempts fail.
  sockets[0].drop();
  for (let i = 1; i <= 3; i++) {
    await until(() => sockets.length === i + 1, `attempt ${i}`);
    sockets[i].drop();
  }
  await until(() => sockets.length === 5, 'attempt 4');
  eq(delays, [5, 10, 20, 20], 'the delays double up to the cap');
  eq(c.connectionState, 'reconnecting', 'reconnecting while not open');

  // It opens: every watched job is subscribed again; the snapshot of A is newer, B's is not.
  sockets[4].open();
  eq(c.connectionState, 'open', 'open');
  eq(sockets[4].sent, [{ type: 'subscribe', jobId: JOB_A }, { type: 'subscribe', jobId: JOB_B }], 'resubscribed');
  sockets[4].receive(progress(JOB_A, 7, 'completed', 100, { snapshot: true, downloadUrl: 'u' }));
  sockets[4].receive(progress(JOB_B, 1, 'pending', 0, { snapshot: true }));
  eq(seen, ['A3:in_progress', 'B1:pending', 'A7:completed'], 'nothing missed, nothing twice');

  // After a successful open the backoff starts over.
  sockets[4].drop();
  await until(() => sockets.length === 6, 'reconnect after the reset');
  eq(delays.at(-1), 5, 'the backoff restarted');
  assert(isTerminal('completed') && !isTerminal('queued'), 'isTerminal');
  c.close();
  await sleep(30);
  eq(sockets.length, 6, 'no reconnect after close()');
});

test('an error frame about a job reaches that job\'s onError', async () => {
  const { FakeSocket, sockets } = scriptedSockets();
  const c = new SoraClient({ baseUrl: 'http://api.test', apiKey: 'k', WebSocket: FakeSocket });
  const errors = [];
  c.subscribe(JOB_A, () => {}, { onError: (e) => errors.push(e) });
  sockets[0].open();
  sockets[0].receive({ type: 'error', code: 'job_not_found', message: 'No such job for this caller', jobId: JOB_A });
  eq(errors.length, 1, 'one error');
  assert(errors[0] instanceof SoraError, 'a SoraError');
  eq([errors[0].code, errors[0].jobId], ['job_not_found', JOB_A], 'code and job');
  c.close();
});

test('setApiKey reconnects with the new key and resubscribes', async () => {
  const { FakeSocket, sockets } = scriptedSockets();
  const c = new SoraClient({ baseUrl: 'http://api.test', apiKey: 'old', WebSocket: FakeSocket });
  c.subscribe(JOB_A, () => {});
  sockets[0].open();
  c.setApiKey('new');
  assert(sockets[0].closed, 'the old socket is closed');
  eq(sockets.length, 2, 'a new socket');
  assert(sockets[1].url.endsWith('token=new'), 'with the new key');
  sockets[1].open();
  eq(sockets[1].sent, [{ type: 'subscribe', jobId: JOB_A }], 'resubscribed');
  c.close();
});
