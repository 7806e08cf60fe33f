// End-to-end browser test of the demo page and the JavaScript client, in Debian's chromium
// (headless) driven by playwright-core, against a running sora-server in emulator mode.
//
// Environment (set by .ci/browser):
//   SORA_URL             the server, e.g. http://127.0.0.1:38080 (required)
//   ALLOWED_ORIGIN_PORT  a port whose origin http://127.0.0.1:<port> is in SORA_CORS_ORIGINS (required)
//   DENIED_ORIGIN_PORT   a port whose origin is NOT in SORA_CORS_ORIGINS (required)
//   KEYED_URL            a second server configured for a real provider (no development key)
//   KEYED_API_KEY        a key of that server (`sora-server keys create`)
//   CHROMIUM             the browser (default /usr/bin/chromium)
//   SCREENSHOT           where to save the screenshot (default <repo>/target/browser/demo.png)
//
// Prints one line per test and a final `N passed, M failed`; exits non-zero on any failure,
// including a missing browser.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { clientTests } from './client.unit.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const SORA_URL = (process.env.SORA_URL || '').replace(/\/$/, '');
const ALLOWED_PORT = Number(process.env.ALLOWED_ORIGIN_PORT);
const DENIED_PORT = Number(process.env.DENIED_ORIGIN_PORT);
const KEYED_URL = (process.env.KEYED_URL || '').replace(/\/$/, '');
const KEYED_API_KEY = process.env.KEYED_API_KEY || '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.SCREENSHOT || resolve(here, '../../target/browser/demo.png');
const TEST_TIMEOUT_MS = 90_000;

const results = [];
const tests = [];
const test = (name, fn) => tests.push({ name, fn });

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

function log(...args) {
  console.log('   ', ...args);
}

/** A tiny static server for the cross-origin pages. */
function staticServer(port) {
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>Another origin</title>
<link rel="icon" href="data:,"></head><body><p>A page on port ${port}, not the API's origin.</p></body></html>`;
  const server = createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-cache' });
    res.end(html);
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => ok(server));
  });
}

// The state shared by the tests, in order.
const state = { context: null, page: null, jobId: null, prompt: null, devKey: null, servers: [] };

// ------------------------------------------------------------------------------------------

test('the page loads with the presets and the development key', async () => {
  const { page } = state;
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const res = await page.goto(`${SORA_URL}/`);
  assert(res && res.status() === 200, `GET / answered ${res && res.status()}`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
  const options = await page.$$eval('#preset option', (os) => os.map((o) => o.value));
  log('presets:', options.join(', '));
  assert(options.length >= 1, 'the preset picker has options');
  const selected = await page.$eval('#preset', (s) => s.value);
  assert(selected === 'standard', `the default preset is selected (got ${selected})`);
  const cred = await page.textContent('#credential-status');
  assert(/Emulator mode/.test(cred), `the credential line says emulator mode: ${cred}`);
  assert(await page.isHidden('#key-form'), 'no key field in emulator mode');
  assert(await page.isHidden('#banner'), 'no error banner');
  assert(await page.isEnabled('#submit'), 'the submit button is enabled');
  assert(errors.length === 0, `no script errors: ${errors.join('; ')}`);
});

test('a submitted prompt shows live progress up to 100 %', async () => {
  const { page } = state;
  state.prompt = `A red kite over green hills at dawn, browser test ${Date.now()}`;
  await page.fill('#prompt', state.prompt);
  // Record every value the progress bar takes.
  await page.evaluate(() => {
    window.__progress = [];
    window.__statuses = [];
    const bar = document.getElementById('progress');
    const status = document.getElementById('status');
    new MutationObserver(() => window.__progress.push(Number(bar.getAttribute('aria-valuenow'))))
      .observe(bar, { attributes: true, attributeFilter: ['aria-valuenow'] });
    new MutationObserver(() => window.__statuses.push(status.dataset.status))
      .observe(status, { attributes: true, attributeFilter: ['data-status'] });
  });
  await page.click('#submit');
  await page.waitForSelector('#current:not([hidden])', { timeout: 10_000 });
  state.jobId = (await page.textContent('#current-id')).trim();
  assert(/^job_[0-9A-Z]{26}$/.test(state.jobId), `a job id is shown: ${state.jobId}`);
  await page.waitForFunction(
    () => document.getElementById('progress').getAttribute('aria-valuenow') === '100' &&
      document.getElementById('status').dataset.status === 'completed',
    null,
    { timeout: 60_000 },
  );
  const progress = await page.evaluate(() => window.__progress);
  const statuses = [...new Set(await page.evaluate(() => window.__statuses))];
  log('job', state.jobId, 'progress seen:', progress.join(' → '), '| statuses:', statuses.join(' → '));
  for (let i = 1; i < progress.length; i++) {
    assert(progress[i] >= progress[i - 1], `progress never goes back (${progress.join(', ')})`);
  }
  assert(statuses.includes('completed'), 'the status reached completed');
  assert(statuses.length >= 2, `the status changed live (${statuses.join(', ')})`);
  const width = await page.$eval('#progress-fill', (el) => el.style.width);
  assert(width === '100%', `the bar is full (${width})`);
  assert((await page.textContent('#progress-text')).trim() === '100 %', 'the label says 100 %');
  const message = (await page.textContent('#message')).trim();
  log('message:', message);
  assert(message.length > 0, 'a status message is shown');
});

test('the video plays from its signed link, with the thumbnail', async () => {
  const { page } = state;
  await page.waitForSelector('#result:not([hidden])', { timeout: 10_000 });
  const src = await page.$eval('#video', (v) => v.currentSrc || v.src);
  assert(/\/api\/download\?.*signature=/.test(src), `the video source is a signed link: ${src}`);
  await page.waitForFunction(() => {
    const v = document.getElementById('video');
    return v.error || (v.readyState >= 1 && v.duration > 0);
  }, null, { timeout: 20_000 });
  const meta = await page.$eval('#video', (v) => ({
    error: v.error && `${v.error.code} ${v.error.message}`,
    duration: v.duration,
    width: v.videoWidth,
    height: v.videoHeight,
  }));
  log('video:', JSON.stringify(meta));
  assert(!meta.error, `the video loads without a media error (${meta.error})`);
  assert(meta.duration > 0 && Number.isFinite(meta.duration), `a positive duration (${meta.duration})`);
  assert(meta.width > 0 && meta.height > 0, 'the video has a picture size');
  const played = await page.evaluate(async () => {
    const v = document.getElementById('video');
    v.pause();
    v.currentTime = 0;
    await v.play();
    const start = performance.now();
    while (v.currentTime < 0.3 && !v.ended && performance.now() - start < 10_000) {
      await new Promise((r) => setTimeout(r, 50));
    }
    return { currentTime: v.currentTime, ended: v.ended, paused: v.paused, error: v.error && v.error.code };
  });
  log('playback:', JSON.stringify(played));
  assert(!played.error, 'no media error while playing');
  assert(played.currentTime > 0.3 || played.ended, `currentTime advanced (${played.currentTime})`);
  // Stop on a frame for the screenshot.
  await page.evaluate(() => {
    const v = document.getElementById('video');
    v.pause();
    v.currentTime = Math.min(0.8, v.duration / 2);
  });
  const thumb = await page.waitForFunction(() => {
    const img = document.getElementById('thumbnail');
    return img.complete && img.naturalWidth > 0 ? { w: img.naturalWidth, h: img.naturalHeight } : null;
  }, null, { timeout: 10_000 });
  log('thumbnail:', JSON.stringify(await thumb.jsonValue()));
  const href = await page.$eval('#download', (a) => a.href);
  assert(href === src, 'the download link is the signed video link');
});

test('the screenshot is saved', async () => {
  const { page } = state;
  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.waitForTimeout(300);
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  assert(existsSync(SCREENSHOT), 'the screenshot exists');
  log('screenshot:', SCREENSHOT);
});

test('after a reload the job is in the recent jobs list, and clicking it shows it', async () => {
  const { page } = state;
  await page.goto(`${SORA_URL}/`); // no #job= hash: nothing is watched yet
  await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
  const row = page.locator(`#jobs li[data-job-id="${state.jobId}"]`);
  await row.waitFor({ timeout: 10_000 });
  const status = await row.locator('.badge').getAttribute('data-status');
  const text = await row.textContent();
  log('row:', text.replace(/\s+/g, ' ').trim());
  assert(status === 'completed', `the row says completed (${status})`);
  assert(text.includes(state.prompt), 'the row shows the prompt');
  assert(await page.isHidden('#current'), 'nothing watched before the click');
  await row.click();
  await page.waitForSelector('#current:not([hidden])');
  assert((await page.textContent('#current-id')).trim() === state.jobId, 'the clicked job is shown');
  await page.waitForFunction(() => document.getElementById('status').dataset.status === 'completed');
  await page.waitForSelector('#result:not([hidden])', { timeout: 10_000 });
  assert(page.url().endsWith(`#job=${state.jobId}`), 'the address names the job');
});

test('an error answer is shown in words', async () => {
  const { page } = state;
  await page.evaluate(() => {
    const select = document.getElementById('preset');
    select.add(new Option('no-such-preset', 'no-such-preset'));
    select.value = 'no-such-preset';
  });
  await page.fill('#prompt', 'A prompt with a preset the server does not know');
  await page.click('#submit');
  await page.waitForSelector('#banner:not([hidden])', { timeout: 10_000 });
  const banner = (await page.textContent('#banner')).trim();
  log('banner:', banner);
  assert(/not created/.test(banner), 'the banner says what failed');
  assert(/preset/i.test(banner), 'the banner carries the server message about the preset');
  assert(/HTTP 4\d\d/.test(banner), 'the banner names the status');
});

test('a watched job survives a dropped socket (reconnect and resubscribe)', async () => {
  const { page } = state;
  await page.goto(`${SORA_URL}/`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
  const outcome = await page.evaluate(async () => {
    const { SoraClient } = await import('/static/sora-client.js');
    const dev = await SoraClient.devKey();
    const client = new SoraClient({ apiKey: dev.apiKey, reconnect: { initialDelayMs: 100, maxDelayMs: 400 } });
    const states = [];
    client.onConnectionChange((s) => states.push(s));
    const created = await client.generate({ prompt: 'Reconnect test: waves on a pebble beach', preset: 'draft' });
    const updates = [];
    let drops = 0;
    const done = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no completion; updates ${JSON.stringify(updates)}`)), 45_000);
      client.subscribe(created.jobId, (u) => {
        updates.push({ v: u.version, s: u.status, p: u.progress, snap: !!u.snapshot });
        // Drop the connection twice while the job runs.
        if (drops < 2 && u.status !== 'completed') {
          drops += 1;
          client._socket.close();
        }
        if (u.status === 'completed') {
          clearTimeout(timer);
          resolve(u);
        }
      }, { onError: (e) => reject(e) });
    });
    const last = await done;
    const url = await client.downloadUrl(created.jobId);
    client.close();
    return { updates, states, drops, downloadUrl: last.downloadUrl, signed: url };
  });
  log('updates:', outcome.updates.map((u) => `v${u.v}:${u.s}:${u.p}${u.snap ? '*' : ''}`).join(' '));
  log('connection states:', outcome.states.join(' → '));
  const versions = outcome.updates.map((u) => u.v);
  for (let i = 1; i < versions.length; i++) assert(versions[i] > versions[i - 1], `versions only go up (${versions})`);
  assert(outcome.drops >= 1, 'the socket was dropped at least once');
  assert(outcome.states.filter((s) => s === 'open').length >= 2, 'the client reconnected');
  assert(outcome.updates.at(-1).s === 'completed', 'the completion arrived after the reconnects');
  assert(/signature=/.test(outcome.downloadUrl), 'the completion carries a signed link');
  assert(/signature=/.test(outcome.signed), 'downloadUrl() returns a signed link');
});

test('from an allowed origin: the REST call and the WebSocket work', async () => {
  const { context } = state;
  const page = await context.newPage();
  try {
    await page.goto(`http://127.0.0.1:${ALLOWED_PORT}/cross.html`);
    const out = await page.evaluate(crossOriginProbe, { api: SORA_URL, key: state.devKey, jobId: state.jobId });
    log('allowed origin:', JSON.stringify(out));
    assert(out.fetch.ok, `fetch /api/jobs succeeded (${out.fetch.error || out.fetch.status})`);
    assert(out.fetch.status === 200 && out.fetch.jobs >= 1, 'it listed the jobs');
    assert(out.ws.opened, `the WebSocket opened (${out.ws.closeCode})`);
    assert(out.ws.snapshot && out.ws.snapshot.jobId === state.jobId, 'the socket sent the job snapshot');
    assert(out.client.ok, `the client module loads cross-origin and lists jobs (${out.client.error})`);
  } finally {
    await page.close();
  }
});

test('from another origin: the REST call fails (CORS) and the WebSocket is refused', async () => {
  const { context } = state;
  const page = await context.newPage();
  try {
    await page.goto(`http://127.0.0.1:${DENIED_PORT}/cross.html`);
    const out = await page.evaluate(crossOriginProbe, { api: SORA_URL, key: state.devKey, jobId: state.jobId });
    log('denied origin:', JSON.stringify(out));
    assert(!out.fetch.ok && out.fetch.error, `fetch /api/jobs was blocked (${JSON.stringify(out.fetch)})`);
    assert(!out.ws.opened, 'the WebSocket did not open');
    assert(!out.ws.snapshot, 'nothing came over the socket');
    assert(!out.client.ok, 'the client cannot be used from there either');
  } finally {
    await page.close();
  }
});

test('without a development key the page asks for one, refuses a bad one in words and keeps a good one', async () => {
  const { context } = state;
  const page = await context.newPage();
  try {
    await page.goto(`${KEYED_URL}/`);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
    assert(await page.isVisible('#key-form'), 'the key field is shown');
    const cred = await page.textContent('#credential-status');
    log('credential line:', cred);
    assert(/paste an API key/i.test(cred), 'the page asks for a key');
    assert(await page.isDisabled('#submit'), 'no submit without a key');

    await page.fill('#api-key', 'sk_sora_not-a-real-key');
    await page.click('#key-form button[type="submit"]');
    await page.waitForSelector('#banner:not([hidden])', { timeout: 10_000 });
    const banner = (await page.textContent('#banner')).trim();
    log('banner:', banner);
    assert(/not valid/.test(banner) && /unauthorized/.test(banner) && /HTTP 401/.test(banner),
      'the refusal is shown in words');
    assert(await page.isVisible('#key-form'), 'the key field is offered again');

    await page.fill('#api-key', KEYED_API_KEY);
    await page.click('#key-form button[type="submit"]');
    await page.waitForFunction(() => document.getElementById('banner').hidden);
    await page.waitForSelector('#jobs-empty:not([hidden])');
    assert(await page.isEnabled('#submit'), 'submit is enabled with a key');

    await page.reload();
    await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
    assert(await page.isHidden('#key-form'), 'the key is remembered across a reload');
    assert(/your API key/.test(await page.textContent('#credential-status')), 'the page says it uses the key');
    assert(await page.isHidden('#banner'), 'no error with the remembered key');
    const stored = await page.evaluate(() => localStorage.getItem('sora.apiKey'));
    assert(stored === KEYED_API_KEY, 'the key is kept in localStorage');

    await page.click('#forget-key');
    assert(await page.isVisible('#key-form'), 'forgetting the key asks again');
    assert(await page.evaluate(() => localStorage.getItem('sora.apiKey')) === null, 'the key is gone');
  } finally {
    await page.close();
  }
});

// Runs in a page of another origin.
async function crossOriginProbe({ api, key, jobId }) {
  const result = { fetch: {}, ws: {}, client: {} };
  try {
    const res = await fetch(`${api}/api/jobs?limit=5`, { headers: { Authorization: `Bearer ${key}` } });
    const body = await res.json();
    result.fetch = { ok: res.ok, status: res.status, jobs: (body.jobs || []).length };
  } catch (e) {
    result.fetch = { ok: false, error: `${e.name}: ${e.message}` };
  }
  result.ws = await new Promise((resolve) => {
    const out = { opened: false, snapshot: null, closeCode: null };
    const wsUrl = `${api.replace(/^http/, 'ws')}/api/ws?token=${encodeURIComponent(key)}`;
    const ws = new WebSocket(wsUrl);
    const finish = () => {
      clearTimeout(timer);
      try { ws.close(); } catch { /* closed */ }
      resolve(out);
    };
    const timer = setTimeout(finish, 5000);
    ws.onopen = () => {
      out.opened = true;
      ws.send(JSON.stringify({ type: 'subscribe', jobId }));
    };
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === 'progress') {
        out.snapshot = { jobId: msg.jobId, status: msg.status, snapshot: msg.snapshot };
        finish();
      }
    };
    ws.onclose = (ev) => {
      out.closeCode = ev.code;
      finish();
    };
  });
  try {
    const { SoraClient } = await import(`${api}/static/sora-client.js`);
    const client = new SoraClient({ baseUrl: api, apiKey: key });
    const page = await client.jobs({ limit: 1 });
    result.client = { ok: true, jobs: page.jobs.length };
  } catch (e) {
    result.client = { ok: false, error: `${e.name}: ${e.message}` };
  }
  return result;
}

// ------------------------------------------------------------------------------------------

function withTimeout(promise, ms, name) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${name}: timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function main() {
  if (!SORA_URL || !ALLOWED_PORT || !DENIED_PORT || !KEYED_URL || !KEYED_API_KEY) {
    console.error('SORA_URL, ALLOWED_ORIGIN_PORT, DENIED_ORIGIN_PORT, KEYED_URL and KEYED_API_KEY must be set (see .ci/browser)');
    console.log('0 passed, 1 failed');
    return 1;
  }
  if (!existsSync(CHROMIUM)) {
    console.error(`FAIL: no browser at ${CHROMIUM} (install Debian's chromium: apt-get install -y chromium)`);
    console.log('0 passed, 1 failed');
    return 1;
  }
  let failed = 0;
  let passed = 0;
  const run = async ({ name, fn }) => {
    const started = Date.now();
    try {
      await withTimeout(fn(), TEST_TIMEOUT_MS, name);
      passed += 1;
      console.log(`ok   ${name} (${Date.now() - started} ms)`);
      return true;
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name} (${Date.now() - started} ms): ${e && e.stack ? e.stack : e}`);
      return false;
    }
  };

  // The client alone, in Node, with a scripted fetch and socket.
  for (const t of clientTests) await run(t);

  const userDataDir = mkdtempSync(join(tmpdir(), 'sora-chromium-'));
  let ran = 0;
  try {
    state.servers.push(await staticServer(ALLOWED_PORT), await staticServer(DENIED_PORT));
    const res = await fetch(`${SORA_URL}/api/dev-key`);
    if (!res.ok) throw new Error(`GET /api/dev-key answered ${res.status}: is the server in emulator mode?`);
    state.devKey = (await res.json()).apiKey;

    state.context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--autoplay-policy=no-user-gesture-required',
      ],
      viewport: { width: 1100, height: 900 },
    });
    state.page = state.context.pages()[0] || (await state.context.newPage());
    const version = await state.page.evaluate(() => navigator.userAgent);
    console.log(`browser: ${CHROMIUM} (${version})`);
    state.page.on('console', (m) => {
      if (m.type() === 'error') log(`[page console] ${m.text()}`);
    });

    for (const t of tests) {
      // The first tests make the job the others use.
      if (!state.jobId && ran >= 2) break;
      ran += 1;
      await run(t);
    }
  } catch (e) {
    failed += 1;
    console.log(`FAIL setup: ${e && e.stack ? e.stack : e}`);
  } finally {
    if (state.context) await state.context.close().catch(() => {});
    for (const s of state.servers) s.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
  for (const t of tests.slice(ran)) {
    failed += 1;
    console.log(`FAIL ${t.name}: not run (the browser or an earlier test it depends on failed)`);
  }
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

// Exit explicitly: a failed test may leave a timer behind.
process.exit(await main());
