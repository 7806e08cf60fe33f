// The demo page: create a video, watch it live over the WebSocket, play it, list recent jobs.
import { SoraClient, SoraError, isTerminal } from './sora-client.js';

const KEY_STORAGE = 'sora.apiKey';
const $ = (id) => document.getElementById(id);

const ui = {
  credentialStatus: $('credential-status'),
  keyForm: $('key-form'),
  keyInput: $('api-key'),
  forgetKey: $('forget-key'),
  banner: $('banner'),
  form: $('generate-form'),
  prompt: $('prompt'),
  preset: $('preset'),
  presetInfo: $('preset-info'),
  submit: $('submit'),
  current: $('current'),
  currentId: $('current-id'),
  currentPrompt: $('current-prompt'),
  status: $('status'),
  progress: $('progress'),
  progressFill: $('progress-fill'),
  progressText: $('progress-text'),
  message: $('message'),
  jobError: $('job-error'),
  cancel: $('cancel'),
  connection: $('connection'),
  result: $('result'),
  video: $('video'),
  thumbnail: $('thumbnail'),
  download: $('download'),
  jobs: $('jobs'),
  jobsEmpty: $('jobs-empty'),
  refresh: $('refresh'),
};

const client = new SoraClient({});
let presets = [];
let watched = null; // {jobId, unsubscribe, videoUrl}

// ------------------------------------------------------------------ messages

function describe(err) {
  if (err instanceof SoraError) {
    if (err.status === 0) return err.message;
    return `${err.message} (${err.code}, HTTP ${err.status})`;
  }
  return String(err && err.message ? err.message : err);
}

function showError(context, err) {
  ui.banner.textContent = `${context}: ${describe(err)}`;
  ui.banner.hidden = false;
  if (err instanceof SoraError && err.status === 401) askForKey('The API key was refused; paste a valid one.');
}

function clearError() {
  ui.banner.hidden = true;
  ui.banner.textContent = '';
}

const STATUS_WORDS = {
  pending: 'Pending',
  queued: 'Queued',
  in_progress: 'In progress',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

function setBadge(el, status) {
  el.textContent = STATUS_WORDS[status] || status;
  el.className = `badge status-${status}`;
  el.dataset.status = status;
}

// ------------------------------------------------------------------ credential

function askForKey(text) {
  ui.credentialStatus.textContent = text;
  ui.keyForm.hidden = false;
  ui.forgetKey.hidden = true;
}

function useKey(key, source) {
  client.setApiKey(key);
  ui.keyForm.hidden = true;
  ui.forgetKey.hidden = source !== 'stored';
  ui.credentialStatus.textContent =
    source === 'dev'
      ? 'Emulator mode: using the development key (owner “demo”). Videos are sample clips.'
      : 'Using your API key.';
  updateSubmit();
}

async function resolveKey() {
  try {
    const dev = await SoraClient.devKey();
    if (dev && dev.apiKey) {
      useKey(dev.apiKey, 'dev');
      return;
    }
  } catch (e) {
    showError('Could not ask the server for a development key', e);
  }
  const stored = localStorage.getItem(KEY_STORAGE);
  if (stored) useKey(stored, 'stored');
  else askForKey('This server uses a real provider: paste an API key.');
}

ui.keyForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const key = ui.keyInput.value.trim();
  if (!key) return;
  localStorage.setItem(KEY_STORAGE, key);
  ui.keyInput.value = '';
  clearError();
  useKey(key, 'stored');
  loadJobs();
});

ui.forgetKey.addEventListener('click', () => {
  localStorage.removeItem(KEY_STORAGE);
  client.setApiKey(null);
  stopWatching();
  renderJobs([]);
  askForKey('Key forgotten: paste an API key.');
  updateSubmit();
});

// ------------------------------------------------------------------ presets

async function loadPresets() {
  try {
    const catalogue = await client.presets();
    presets = catalogue.presets || [];
    ui.preset.replaceChildren(
      ...presets.map((p) => {
        const o = document.createElement('option');
        o.value = p.name;
        o.textContent = `${p.name} — ${p.model}, ${p.size}, ${p.seconds} s`;
        if (p.name === catalogue.defaultPreset) o.selected = true;
        return o;
      }),
    );
    ui.preset.disabled = presets.length === 0;
    showPresetInfo();
  } catch (e) {
    ui.preset.replaceChildren(new Option('Presets unavailable'));
    showError('Could not load the presets', e);
  }
  updateSubmit();
}

function showPresetInfo() {
  const p = presets.find((x) => x.name === ui.preset.value);
  ui.presetInfo.textContent = p ? p.description : '';
}

ui.preset.addEventListener('change', showPresetInfo);

function updateSubmit() {
  ui.submit.disabled = !client.apiKey || presets.length === 0;
}

// ------------------------------------------------------------------ generate

function idempotencyKey() {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  return `demo-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

ui.form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const prompt = ui.prompt.value.trim();
  if (!prompt) {
    showError('Cannot generate', new Error('Write a prompt first.'));
    return;
  }
  clearError();
  ui.submit.disabled = true;
  ui.submit.textContent = 'Submitting…';
  try {
    const created = await client.generate({ prompt, preset: ui.preset.value || undefined }, {
      idempotencyKey: idempotencyKey(),
    });
    watch(created.jobId, prompt);
    loadJobs();
  } catch (e) {
    showError('The job was not created', e);
  } finally {
    ui.submit.textContent = 'Generate';
    updateSubmit();
  }
});

// ------------------------------------------------------------------ watching one job

function stopWatching() {
  if (watched) watched.unsubscribe();
  watched = null;
  ui.current.hidden = true;
}

function watch(jobId, prompt) {
  if (watched && watched.jobId === jobId) return;
  if (watched) watched.unsubscribe();
  ui.current.hidden = false;
  ui.currentId.textContent = jobId;
  ui.currentPrompt.textContent = prompt || '';
  ui.jobError.hidden = true;
  ui.result.hidden = true;
  ui.video.removeAttribute('src');
  ui.video.load();
  ui.thumbnail.removeAttribute('src');
  setProgress(0);
  setBadge(ui.status, 'pending');
  ui.message.textContent = 'Waiting for the first update…';
  ui.cancel.hidden = true;
  history.replaceState(null, '', `#job=${encodeURIComponent(jobId)}`);
  markSelected(jobId);

  const entry = { jobId, videoUrl: null, unsubscribe: () => {} };
  watched = entry;
  entry.unsubscribe = client.subscribe(jobId, (u) => watched === entry && render(entry, u), {
    onError: (e) => watched === entry && showError(`Cannot watch ${jobId}`, e),
  });
  if (!prompt) {
    client.status(jobId).then(
      (job) => {
        if (watched === entry) ui.currentPrompt.textContent = job.prompt;
      },
      (e) => watched === entry && showError(`Cannot read ${jobId}`, e),
    );
  }
}

function setProgress(p) {
  const pct = Math.max(0, Math.min(100, Math.round(Number(p) || 0)));
  ui.progressFill.style.width = `${pct}%`;
  ui.progress.setAttribute('aria-valuenow', String(pct));
  ui.progress.dataset.progress = String(pct);
  ui.progressText.textContent = `${pct} %`;
}

function render(entry, u) {
  setBadge(ui.status, u.status);
  setProgress(u.progress);
  ui.message.textContent = u.message || '';
  ui.cancel.hidden = isTerminal(u.status);
  if (u.error) {
    ui.jobError.textContent = `${u.error.message} (${u.error.code})`;
    ui.jobError.hidden = false;
  } else {
    ui.jobError.hidden = true;
  }
  if (u.status === 'completed' && u.downloadUrl) {
    ui.result.hidden = false;
    if (entry.videoUrl !== u.downloadUrl) {
      entry.videoUrl = u.downloadUrl;
      ui.video.src = u.downloadUrl;
      ui.download.href = u.downloadUrl;
    }
    const figure = ui.thumbnail.closest('figure');
    if (u.thumbnailUrl) {
      if (ui.thumbnail.getAttribute('src') !== u.thumbnailUrl) ui.thumbnail.src = u.thumbnailUrl;
      figure.hidden = false;
    } else {
      figure.hidden = true;
    }
  } else if (u.status === 'completed') {
    ui.jobError.textContent = 'The files of this job were deleted.';
    ui.jobError.hidden = false;
  }
  updateRow(u);
  if (isTerminal(u.status)) loadJobs();
}

ui.cancel.addEventListener('click', async () => {
  if (!watched) return;
  ui.cancel.disabled = true;
  try {
    await client.cancel(watched.jobId);
  } catch (e) {
    showError('Could not cancel', e);
  } finally {
    ui.cancel.disabled = false;
  }
});

ui.video.addEventListener('error', () => {
  const err = ui.video.error;
  if (err && ui.video.getAttribute('src')) {
    showError('The video cannot be played', new Error(err.message || `media error ${err.code}`));
  }
});

client.onConnectionChange((state, detail) => {
  ui.connection.textContent =
    state === 'reconnecting'
      ? `Live updates interrupted; reconnecting${detail && detail.delayMs ? ` in ${(detail.delayMs / 1000).toFixed(1)} s` : ''}…`
      : state === 'connecting'
        ? 'Connecting for live updates…'
        : state === 'open'
          ? 'Live'
          : '';
});

// ------------------------------------------------------------------ recent jobs

function timeAgo(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(t).toLocaleString();
}

function renderJobs(jobs) {
  ui.jobsEmpty.hidden = jobs.length > 0;
  ui.jobs.replaceChildren(
    ...jobs.map((job) => {
      const li = document.createElement('li');
      li.dataset.jobId = job.jobId;
      li.tabIndex = 0;
      li.title = 'Watch this job';
      const badge = document.createElement('span');
      setBadge(badge, job.status);
      const prompt = document.createElement('span');
      prompt.className = 'job-prompt';
      prompt.textContent = job.prompt;
      const meta = document.createElement('span');
      meta.className = 'job-meta small muted';
      meta.textContent = `${job.spec.size} · ${job.spec.seconds} s · ${timeAgo(job.createdAt)}`;
      const pct = document.createElement('span');
      pct.className = 'job-progress small';
      pct.textContent = `${job.progress} %`;
      li.append(badge, prompt, meta, pct);
      if (job.error) li.title = `${job.error.message} (${job.error.code})`;
      const open = () => watch(job.jobId, job.prompt);
      li.addEventListener('click', open);
      li.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          open();
        }
      });
      return li;
    }),
  );
  if (watched) markSelected(watched.jobId);
}

function updateRow(u) {
  const li = [...ui.jobs.children].find((x) => x.dataset.jobId === u.jobId);
  if (!li) return;
  const badge = li.querySelector('.badge');
  if (badge) setBadge(badge, u.status);
  const pct = li.querySelector('.job-progress');
  if (pct) pct.textContent = `${u.progress} %`;
}

function markSelected(jobId) {
  for (const li of ui.jobs.children) li.classList.toggle('selected', li.dataset.jobId === jobId);
}

let jobsLoading = null;
async function loadJobs() {
  if (!client.apiKey) return;
  if (jobsLoading) return jobsLoading;
  jobsLoading = (async () => {
    try {
      const page = await client.jobs({ limit: 20 });
      renderJobs(page.jobs);
    } catch (e) {
      showError('Could not list your jobs', e);
    } finally {
      jobsLoading = null;
    }
  })();
  return jobsLoading;
}

ui.refresh.addEventListener('click', () => loadJobs());

// ------------------------------------------------------------------ start

async function start() {
  await Promise.all([resolveKey(), loadPresets()]);
  updateSubmit();
  if (!client.apiKey) return;
  await loadJobs();
  const m = /^#job=(.+)$/.exec(location.hash);
  if (m) watch(decodeURIComponent(m[1]));
}

start()
  .catch((e) => showError('The page failed to start', e))
  .finally(() => {
    document.body.dataset.ready = 'true';
  });
