// sora-client.js: a dependency-free ES module client of the Sora job service.
//
// REST: generate, status, jobs, cancel, presets, downloadUrl. Live progress: subscribe(jobId,
// onUpdate) over ONE shared WebSocket per client, reconnected with exponential backoff; on every
// (re)connect each watched job is subscribed again and the server answers with a snapshot, so
// nothing is missed. Messages whose version is not newer than the last one seen for that job are
// dropped. Errors are thrown as SoraError {status, code, message}.
//
// Works in browsers and in Node 18+ (global fetch; WebSocket is global from Node 22, or pass one).

/** Public statuses after which a job never changes again. */
export const TERMINAL_STATUSES = Object.freeze(['completed', 'failed', 'cancelled']);

/** Whether a status is terminal (completed, failed or cancelled). */
export function isTerminal(status) {
  return TERMINAL_STATUSES.includes(status);
}

/**
 * An error answer of the service (`{"error":{"code","message"}}`), a network failure
 * (status 0, code "network_error") or a protocol problem.
 */
export class SoraError extends Error {
  constructor({ status = 0, code = 'error', message = 'Request failed', field, body } = {}) {
    super(message);
    this.name = 'SoraError';
    /** HTTP status; 0 when no answer arrived. */
    this.status = status;
    /** Machine-readable code, e.g. "invalid_request", "unauthorized", "job_not_found". */
    this.code = code;
    /** The offending field, when the service names one. */
    if (field !== undefined) this.field = field;
    /** The parsed error body, when there was one. */
    if (body !== undefined) this.body = body;
  }
}

const DEFAULT_RECONNECT = Object.freeze({
  initialDelayMs: 500,
  maxDelayMs: 15000,
  factor: 2,
  jitter: 0.2,
});

/** How often the client pings over the socket, and how long silence may last before it reconnects. */
const PING_INTERVAL_MS = 20000;
const SILENCE_LIMIT_MS = 50000;
/** How long an idle socket (no job watched) stays open before it is closed. */
const IDLE_CLOSE_MS = 5000;

function defaultBaseUrl() {
  if (typeof globalThis.location !== 'undefined' && globalThis.location.origin &&
      globalThis.location.origin !== 'null') {
    return globalThis.location.origin;
  }
  throw new SoraError({ code: 'invalid_config', message: 'baseUrl is required outside a browser page' });
}

/** The client. */
export class SoraClient {
  /**
   * @param {object} options
   * @param {string} [options.baseUrl] the service's URL (default: the page's origin)
   * @param {string} [options.apiKey] the bearer API key
   * @param {typeof fetch} [options.fetch] a fetch implementation (default: the global one)
   * @param {typeof WebSocket} [options.WebSocket] a WebSocket class (default: the global one)
   * @param {object} [options.reconnect] {initialDelayMs, maxDelayMs, factor, jitter}
   */
  constructor({ baseUrl, apiKey, fetch: fetchImpl, WebSocket: WebSocketImpl, reconnect } = {}) {
    const base = new URL(baseUrl || defaultBaseUrl());
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    this._base = base;
    this._apiKey = apiKey || null;
    this._fetch = fetchImpl || globalThis.fetch?.bind(globalThis);
    this._WebSocket = WebSocketImpl || globalThis.WebSocket;
    this._reconnect = { ...DEFAULT_RECONNECT, ...(reconnect || {}) };

    /** jobId -> Set of {onUpdate, onError} */
    this._watchers = new Map();
    /** jobId -> newest progress message seen */
    this._latest = new Map();
    this._socket = null;
    this._socketOpen = false;
    this._attempt = 0;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._idleTimer = null;
    this._lastHeard = 0;
    this._closed = false;
    this._connectionListeners = new Set();
    this._connectionState = 'idle';
  }

  /** The service's base URL (always ending in `/`). */
  get baseUrl() {
    return this._base.href;
  }

  /** The API key in use (or null). */
  get apiKey() {
    return this._apiKey;
  }

  /**
   * Replaces the API key. An open socket is reconnected with the new key (and every watched job
   * resubscribed).
   */
  setApiKey(apiKey) {
    this._apiKey = apiKey || null;
    if (this._socket) this._dropSocket(true);
  }

  /**
   * Asks a server in emulator mode for its development key: resolves to `{apiKey, owner,
   * emulator}`, or `null` when the server has none (404: a real provider is configured).
   */
  static async devKey(baseUrl, { fetch: fetchImpl } = {}) {
    const probe = new SoraClient({ baseUrl, fetch: fetchImpl });
    try {
      return await probe._request('GET', 'api/dev-key', { auth: false });
    } catch (e) {
      if (e instanceof SoraError && e.status === 404) return null;
      throw e;
    }
  }

  // ---------------------------------------------------------------- REST

  /**
   * Creates a job: `POST /api/generate`. `body` is `{prompt, preset?, model?, size?, seconds?,
   * remixOf?, metadata?}`. Resolves to `{jobId, status, statusUrl, downloadUrl, wsUrl,
   * createdAt, replayed}` (`replayed`: the Idempotency-Key matched an earlier create).
   */
  async generate(body, { idempotencyKey } = {}) {
    const headers = {};
    if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
    const { data, response } = await this._request('POST', 'api/generate', {
      body,
      headers,
      withResponse: true,
    });
    return { ...data, replayed: response.headers.get('Idempotent-Replayed') === 'true' };
  }

  /** A job: `GET /api/status?jobId=...`. */
  async status(jobId) {
    requireJobId(jobId);
    return this._request('GET', 'api/status', { query: { jobId, renderVersion: 'v3' } });
  }

  /**
   * The caller's jobs, newest first: `GET /api/jobs`. Resolves to `{jobs, nextCursor}`; pass
   * `nextCursor` back as `cursor` for the next page.
   */
  async jobs({ status, limit, cursor } = {}) {
    return this._request('GET', 'api/jobs', { query: { status, limit, cursor } });
  }

  /**
   * Cancels a job, or deletes a finished job's files: `DELETE /api/jobs/{jobId}`. Resolves to
   * `{job, cancelled, filesDeleted, upstream}`.
   */
  async cancel(jobId) {
    requireJobId(jobId);
    return this._request('DELETE', `api/jobs/${encodeURIComponent(jobId)}`);
  }

  /** The catalogue: `{models, presets, defaultPreset}`. */
  async presets() {
    return this._request('GET', 'api/presets', { auth: false });
  }

  /**
   * The signed, short-lived link of a completed job's file (`variant`: video, thumbnail or
   * spritesheet; default video). It needs no credential, so it can be a `<video src>`.
   * Throws SoraError with code `not_completed` while the job is not completed, and
   * `variant_unavailable` when the job has no such file (or its files were deleted).
   */
  async downloadUrl(jobId, variant = 'video') {
    const job = await this.status(jobId);
    if (job.status !== 'completed') {
      throw new SoraError({
        status: 409,
        code: 'not_completed',
        message: `The job is ${job.status}; files exist only once it is completed`,
      });
    }
    const file = job.downloads && job.downloads[variant];
    if (!file) {
      throw new SoraError({
        status: 404,
        code: 'variant_unavailable',
        message: job.filesDeleted
          ? 'The files of this job were deleted'
          : `This job has no ${variant} file`,
      });
    }
    return file.url;
  }

  async _request(method, path, { query, body, headers = {}, auth = true, withResponse = false } = {}) {
    if (!this._fetch) {
      throw new SoraError({ code: 'invalid_config', message: 'No fetch implementation available' });
    }
    const url = new URL(path, this._base);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
    }
    const h = { Accept: 'application/json', ...headers };
    if (auth && this._apiKey) h.Authorization = `Bearer ${this._apiKey}`;
    let payload;
    if (body !== undefined) {
      h['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    let response;
    try {
      response = await this._fetch(url.href, { method, headers: h, body: payload });
    } catch (e) {
      throw new SoraError({
        code: 'network_error',
        message: `Could not reach the service (${e && e.message ? e.message : e})`,
      });
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const err = data && data.error;
      throw new SoraError({
        status: response.status,
        code: (err && err.code) || `http_${response.status}`,
        message: (err && err.message) || `${response.status} ${response.statusText || 'error'}`,
        field: err && err.field,
        body: data ?? undefined,
      });
    }
    if (text && data === null) {
      throw new SoraError({
        status: response.status,
        code: 'invalid_response',
        message: 'The service answered with something that is not JSON',
      });
    }
    return withResponse ? { data, response } : data;
  }

  // ---------------------------------------------------------------- WebSocket

  /**
   * Watches a job. `onUpdate(message)` receives `{type:"progress", jobId, progress, status,
   * message, version, snapshot?, error?, downloadUrl?, thumbnailUrl?}`: first the current state,
   * then every change, each version once and in order. `onError(SoraError)` (optional) hears
   * about a job the server will not show (e.g. code `job_not_found`). Returns a function that
   * stops watching. All jobs share one socket, reconnected with backoff when it drops.
   */
  subscribe(jobId, onUpdate, { onError } = {}) {
    requireJobId(jobId);
    if (typeof onUpdate !== 'function') throw new TypeError('onUpdate must be a function');
    if (this._closed) throw new SoraError({ code: 'closed', message: 'The client was closed' });
    const watcher = { onUpdate, onError };
    let set = this._watchers.get(jobId);
    const isNew = !set;
    if (!set) {
      set = new Set();
      this._watchers.set(jobId, set);
    }
    set.add(watcher);
    clearTimeout(this._idleTimer);
    this._idleTimer = null;

    if (isNew) {
      if (this._socketOpen) this._send({ type: 'subscribe', jobId });
      else this._ensureSocket();
    } else {
      // Already watched: hand the newcomer what we have.
      const latest = this._latest.get(jobId);
      if (latest) queueMicrotask(() => set.has(watcher) && safeCall(onUpdate, latest));
    }

    let active = true;
    return () => {
      if (!active) return;
      active = false;
      const s = this._watchers.get(jobId);
      if (!s) return;
      s.delete(watcher);
      if (s.size === 0) {
        this._watchers.delete(jobId);
        this._latest.delete(jobId);
        if (this._socketOpen) this._send({ type: 'unsubscribe', jobId });
        this._maybeIdleClose();
      }
    };
  }

  /** The jobs being watched. */
  get watching() {
    return [...this._watchers.keys()];
  }

  /** `idle`, `connecting`, `open` or `reconnecting`. */
  get connectionState() {
    return this._connectionState;
  }

  /**
   * Hears about the socket's state: `listener(state, detail)` with state `connecting`, `open`,
   * `reconnecting` (detail: `{delayMs, attempt}`) or `idle`. Returns a function that stops it.
   */
  onConnectionChange(listener) {
    this._connectionListeners.add(listener);
    return () => this._connectionListeners.delete(listener);
  }

  /** Closes the socket and forgets every subscription; REST calls still work. */
  close() {
    this._closed = true;
    this._watchers.clear();
    this._latest.clear();
    clearTimeout(this._idleTimer);
    this._dropSocket(false);
  }

  _setState(state, detail) {
    if (this._connectionState === state && state !== 'reconnecting') return;
    this._connectionState = state;
    for (const l of this._connectionListeners) safeCall(l, state, detail);
  }

  _wsUrl() {
    const url = new URL('api/ws', this._base);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this._apiKey) url.searchParams.set('token', this._apiKey);
    return url.href;
  }

  _ensureSocket() {
    if (this._socket || this._reconnectTimer || this._closed || this._watchers.size === 0) return;
    if (!this._WebSocket) {
      this._failAll(new SoraError({ code: 'invalid_config', message: 'No WebSocket implementation available' }));
      return;
    }
    this._setState(this._attempt === 0 ? 'connecting' : 'reconnecting', { attempt: this._attempt });
    let ws;
    try {
      ws = new this._WebSocket(this._wsUrl());
    } catch (e) {
      this._scheduleReconnect();
      return;
    }
    this._socket = ws;
    this._socketOpen = false;
    ws.onopen = () => {
      if (this._socket !== ws) return;
      this._socketOpen = true;
      this._attempt = 0;
      this._lastHeard = Date.now();
      this._setState('open');
      for (const jobId of this._watchers.keys()) this._send({ type: 'subscribe', jobId });
      this._startPing();
    };
    ws.onmessage = (event) => {
      if (this._socket !== ws) return;
      this._lastHeard = Date.now();
      this._onMessage(event.data);
    };
    ws.onclose = () => {
      if (this._socket !== ws) return;
      this._socket = null;
      this._socketOpen = false;
      this._stopPing();
      this._scheduleReconnect();
    };
    // An error is always followed by a close, which reconnects.
    ws.onerror = () => {};
  }

  _onMessage(data) {
    if (typeof data !== 'string') return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'progress' && typeof msg.jobId === 'string') {
      const watchers = this._watchers.get(msg.jobId);
      if (!watchers) return;
      const last = this._latest.get(msg.jobId);
      if (last && !(Number(msg.version) > Number(last.version))) return;
      this._latest.set(msg.jobId, msg);
      for (const w of [...watchers]) safeCall(w.onUpdate, msg);
    } else if (msg.type === 'error') {
      const err = new SoraError({ code: msg.code || 'error', message: msg.message || 'WebSocket error' });
      if (msg.jobId && this._watchers.has(msg.jobId)) {
        err.jobId = msg.jobId;
        for (const w of [...this._watchers.get(msg.jobId)]) if (w.onError) safeCall(w.onError, err);
      }
    }
    // pong and unsubscribed need nothing.
  }

  _send(obj) {
    if (!this._socket || !this._socketOpen) return;
    try {
      this._socket.send(JSON.stringify(obj));
    } catch {
      // The close handler reconnects.
    }
  }

  _startPing() {
    this._stopPing();
    this._pingTimer = setInterval(() => {
      if (Date.now() - this._lastHeard > SILENCE_LIMIT_MS) {
        // Half-open connection: drop it and reconnect.
        this._dropSocket(true);
        return;
      }
      this._send({ type: 'ping' });
    }, PING_INTERVAL_MS);
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  /** Closes the socket; with `reconnect`, opens a new one right away if jobs are watched. */
  _dropSocket(reconnect) {
    const ws = this._socket;
    this._socket = null;
    this._socketOpen = false;
    this._stopPing();
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch {
        // already closed
      }
    }
    this._attempt = 0;
    if (reconnect && this._watchers.size > 0) this._ensureSocket();
    else this._setState('idle');
  }

  _scheduleReconnect() {
    if (this._closed || this._watchers.size === 0) {
      this._setState('idle');
      return;
    }
    const { initialDelayMs, maxDelayMs, factor, jitter } = this._reconnect;
    const base = Math.min(maxDelayMs, initialDelayMs * Math.pow(factor, this._attempt));
    const delayMs = Math.round(base * (1 - jitter + Math.random() * 2 * jitter));
    this._attempt += 1;
    this._setState('reconnecting', { delayMs, attempt: this._attempt });
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._ensureSocket();
    }, delayMs);
  }

  _maybeIdleClose() {
    if (this._watchers.size > 0 || this._idleTimer) return;
    this._idleTimer = setTimeout(() => {
      this._idleTimer = null;
      if (this._watchers.size === 0) this._dropSocket(false);
    }, IDLE_CLOSE_MS);
  }

  _failAll(err) {
    for (const set of this._watchers.values()) {
      for (const w of set) if (w.onError) safeCall(w.onError, err);
    }
  }
}

function requireJobId(jobId) {
  if (typeof jobId !== 'string' || jobId === '') {
    throw new SoraError({ code: 'invalid_request', message: 'jobId: a job id like job_01... is required' });
  }
}

function safeCall(fn, ...args) {
  try {
    fn(...args);
  } catch (e) {
    // A listener's bug must not break the socket; report it where it can be seen.
    setTimeout(() => {
      throw e;
    });
  }
}
