// Type declarations of sora-client.js.

/** A job's public status. */
export type JobStatus = 'pending' | 'queued' | 'in_progress' | 'completed' | 'failed' | 'cancelled';

/** A file a completed job offers. */
export type Variant = 'video' | 'thumbnail' | 'spritesheet';

/** The statuses after which a job never changes. */
export declare const TERMINAL_STATUSES: readonly ['completed', 'failed', 'cancelled'];

/** Whether a status is terminal. */
export declare function isTerminal(status: JobStatus | string): boolean;

/** Why a job failed. */
export interface JobFailure {
  code: string;
  message: string;
}

/** One downloadable file (a signed, short-lived link that needs no credential). */
export interface DownloadFile {
  url: string;
  contentType: string;
  size: number;
}

/** A job as `GET /api/status` and `GET /api/jobs` show it. */
export interface Job {
  jobId: string;
  status: JobStatus;
  /** 0 to 100. */
  progress: number;
  /** Where the job is, in words. */
  message: string;
  prompt: string;
  spec: { model: string; size: string; seconds: number };
  remixOf?: string;
  metadata: Record<string, string>;
  error: JobFailure | null;
  createdAt: string;
  updatedAt: string;
  submittedAt: string | null;
  finishedAt: string | null;
  /** The signed video link, when completed. */
  downloadUrl: string | null;
  downloads: Partial<Record<Variant, DownloadFile>> | null;
  filesDeleted: boolean;
  statusUrl: string;
  wsUrl: string;
}

/** The body of `POST /api/generate`. */
export interface GenerateRequest {
  prompt: string;
  preset?: string;
  model?: string;
  size?: string;
  seconds?: number | string;
  remixOf?: string;
  metadata?: Record<string, string>;
}

/** The answer to `POST /api/generate`. */
export interface CreatedJob {
  jobId: string;
  status: JobStatus;
  statusUrl: string;
  /** The credentialed download route (use `downloadUrl()` or the progress message for a signed one). */
  downloadUrl: string;
  wsUrl: string;
  createdAt: string;
  /** True when the Idempotency-Key matched an earlier create (the same job is returned). */
  replayed: boolean;
}

/** A page of `GET /api/jobs`. */
export interface JobsPage {
  jobs: Job[];
  nextCursor: string | null;
}

/** The answer to `DELETE /api/jobs/{jobId}`. */
export interface CancelResult {
  job: Job;
  cancelled: boolean;
  filesDeleted: boolean;
  upstream: { outcome: string; message: string };
}

/** A model of the catalogue. */
export interface CatalogueModel {
  id: string;
  sizes: string[];
  seconds: number[];
}

/** A named preset. */
export interface Preset {
  name: string;
  description: string;
  model: string;
  size: string;
  seconds: number;
}

/** `GET /api/presets`. */
export interface Catalogue {
  models: CatalogueModel[];
  presets: Preset[];
  defaultPreset: string;
}

/** `GET /api/dev-key` (emulator mode only). */
export interface DevKey {
  apiKey: string;
  owner: string;
  emulator: true;
}

/** A WebSocket progress message: the snapshot on subscribe, then every change. */
export interface ProgressUpdate {
  type: 'progress';
  jobId: string;
  progress: number;
  status: JobStatus;
  message: string;
  /** Goes up with every change. */
  version: number;
  /** True for the snapshot sent on (re)subscribe. */
  snapshot?: boolean;
  error?: JobFailure;
  /** Signed video link, when completed. */
  downloadUrl?: string;
  /** Signed thumbnail link, when completed and there is one. */
  thumbnailUrl?: string;
}

/** The socket's state. */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting';

/** Reconnection tuning. */
export interface ReconnectOptions {
  /** First delay (default 500 ms). */
  initialDelayMs?: number;
  /** Largest delay (default 15000 ms). */
  maxDelayMs?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Random spread, 0 to 1 (default 0.2). */
  jitter?: number;
}

/** Options of the client. */
export interface SoraClientOptions {
  /** The service's URL; default: the page's origin. */
  baseUrl?: string;
  /** The bearer API key. */
  apiKey?: string | null;
  /** A fetch implementation (default: the global one). */
  fetch?: typeof fetch;
  /** A WebSocket class (default: the global one). */
  WebSocket?: typeof WebSocket;
  reconnect?: ReconnectOptions;
}

/** An error answer (`{"error":{"code","message"}}`), a network failure (status 0) or a protocol problem. */
export declare class SoraError extends Error {
  constructor(init?: { status?: number; code?: string; message?: string; field?: string; body?: unknown });
  readonly name: 'SoraError';
  /** HTTP status; 0 when no answer arrived. */
  status: number;
  /** Machine-readable code. */
  code: string;
  /** The offending field, when the service names one. */
  field?: string;
  /** The job, for errors about one job on the socket. */
  jobId?: string;
  /** The parsed error body. */
  body?: unknown;
}

/** The client. */
export declare class SoraClient {
  constructor(options?: SoraClientOptions);
  /** The base URL, ending in `/`. */
  readonly baseUrl: string;
  /** The API key in use. */
  readonly apiKey: string | null;
  /** Replaces the API key (an open socket reconnects with it). */
  setApiKey(apiKey: string | null): void;
  /** The development key of a server in emulator mode, or null (404). */
  static devKey(baseUrl?: string, options?: { fetch?: typeof fetch }): Promise<DevKey | null>;

  /** `POST /api/generate`. */
  generate(body: GenerateRequest, options?: { idempotencyKey?: string }): Promise<CreatedJob>;
  /** `GET /api/status`. */
  status(jobId: string): Promise<Job>;
  /** `GET /api/jobs`, newest first. */
  jobs(query?: { status?: JobStatus; limit?: number; cursor?: string | null }): Promise<JobsPage>;
  /** `DELETE /api/jobs/{jobId}`. */
  cancel(jobId: string): Promise<CancelResult>;
  /** `GET /api/presets`. */
  presets(): Promise<Catalogue>;
  /** The signed link of a completed job's file; throws `not_completed` / `variant_unavailable`. */
  downloadUrl(jobId: string, variant?: Variant): Promise<string>;

  /**
   * Watches a job over the shared WebSocket: the current state, then every newer version.
   * Returns a function that stops watching.
   */
  subscribe(
    jobId: string,
    onUpdate: (update: ProgressUpdate) => void,
    options?: { onError?: (error: SoraError) => void },
  ): () => void;
  /** The jobs being watched. */
  readonly watching: string[];
  /** The socket's state. */
  readonly connectionState: ConnectionState;
  /** Hears about the socket's state; returns a function that stops it. */
  onConnectionChange(
    listener: (state: ConnectionState, detail?: { delayMs?: number; attempt?: number }) => void,
  ): () => void;
  /** Closes the socket and forgets every subscription. */
  close(): void;
}
