/** One record as the client holds it. */
export interface BrokerRecord<T = unknown> {
  event: string;
  channel: string;
  data: T;
  /** Record id (decimal string): Broker's commit order. */
  id: string;
  /** Microseconds since the Unix epoch. */
  timestamp: number;
}

/** A change of the latest-data map: a record, or a reset after which the map is empty. */
export type Change = BrokerRecord | { reset: true };

export interface BrokerOptions {
  /** Broker's base URL, e.g. `http://localhost:8080`. */
  url: string;
  /** A JWT, from `login` or elsewhere. */
  token?: string;
  /** Called for a fresh token when the current one is missing, expired or refused. */
  getToken?: () => Promise<string> | string;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** First reconnection delay in ms (default: the server's `retry:`, else 1000). */
  initialDelay?: number;
  /** Longest reconnection delay in ms (default 30000). */
  maxDelay?: number;
}

/** An error answered by Broker, or a request that did not reach it (status 0). */
export declare class BrokerError extends Error {
  constructor(status: number, message: string);
  readonly status: number;
}

/** Lifecycle events, listened to with `on("$open" | "$synced" | ...)`. */
export interface LifecycleEvents {
  $open: Record<string, never>;
  $synced: { id: string };
  $reset: { reason: string; last_event_id: string };
  $error: { error: Error; status: number };
  $reconnecting: { delay: number; attempt: number };
}

export declare class Broker {
  constructor(options: BrokerOptions);
  readonly url: string;
  token: string | null;
  /** Id of the last record received; sent as `Last-Event-ID` on reconnection. */
  lastEventId: string | null;
  /** Whether the stream is open and past its snapshot or replay. */
  readonly synced: boolean;
  /** Resolves at the first `$synced`. */
  readonly ready: Promise<void>;

  signup(username: string, password: string): Promise<{ username: string }>;
  login(username: string, password: string): Promise<{ jwt: string; expires_at: number }>;
  insert<T = unknown>(
    event: string,
    data: T,
    options?: { channel?: string },
  ): Promise<{ id: string; event: string; channel: string; timestamp: number }>;
  audit(event: string, options?: { channel?: string }): Promise<Record<string, unknown>>;
  history(
    event: string,
    options?: { channel?: string; after?: string; limit?: number },
  ): Promise<{
    items: Array<BrokerRecord & { user: string | null }>;
    next: string | null;
  }>;

  on<K extends keyof LifecycleEvents>(event: K, handler: (detail: LifecycleEvents[K]) => void): () => void;
  on<T = unknown>(event: string, handler: (data: T, record: BrokerRecord<T>) => void): () => void;
  subscribe(listener: (change: Change) => void): () => void;
  get<T = unknown>(event: string, options?: { channel?: string }): T | undefined;
  entries(): BrokerRecord[];

  connect(options?: { channels?: string[] }): this;
  close(): void;
}

/** Incremental WHATWG Server-Sent Events parser. */
export declare class SseParser {
  lastEventId: string;
  retry: number | null;
  push(text: string): Array<{ type: string; data: string; lastEventId: string }>;
}
