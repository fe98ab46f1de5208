import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions as TlsServerOptions } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { presentedKey, type AccessControl } from './security/access';
import { ConfigError } from './errors';
import { portOption } from './options';
import { pipelineMetrics, type PipelineMetricsOptions } from './metrics';
import type { Pipeline, Readiness } from './pipeline';

export interface ServeMetricsOptions extends PipelineMetricsOptions {
  /** @default '127.0.0.1' */
  host?: string;
  /** 0 picks a free port. @default 9464 */
  port?: number;
  /**
   * When given, `/metrics` requires an API key (`Authorization: Bearer <key>` or
   * `X-API-Key: <key>`) granted `metrics:read`: 401 without a valid key, 403 without the
   * permission. `/health` and `/ready` stay open for probes. @default none: all open
   */
  access?: AccessControl;
  /** Serve HTTPS with these `node:https` options (`key`, `cert`, …), as the webhook's `tls`. @default plain HTTP */
  tls?: TlsServerOptions;
}

export interface MetricsServer extends AsyncDisposable {
  /** `http://host:port` (`https://` with `tls`), without a trailing slash. */
  readonly url: string;
  /** The registry `/metrics` serves. */
  readonly registry: Registry;
  /** Stops listening and stops reporting the pipelines. */
  close(): Promise<void>;
}

/** The permission `/metrics` asks for when `access` is set. */
export const METRICS_PERMISSION = 'metrics:read';

/**
 * Serves pipelines' Prometheus metrics and their probes over HTTP:
 * - `GET /metrics`: the `tributary_*` metrics (see `pipelineMetrics`), text format;
 * - `GET /health`: liveness, 200 unless a pipeline failed (503);
 * - `GET /ready`: readiness, 200 while every pipeline runs with its sink breaker closed and
 *   its source connected, 503 otherwise; the body says why, as JSON.
 *
 * ## Example
 * ```ts
 * import { serveMetrics } from 'tributary';
 * const server = await serveMetrics(pipeline, { port: 9464 });
 * // curl http://127.0.0.1:9464/metrics
 * await server.close();
 * ```
 *
 * @param pipelines The pipelines to report and probe.
 * @param options Address, access control, and the metrics' options.
 */
export async function serveMetrics(pipelines: Pipeline<any> | readonly Pipeline<any>[], options: ServeMetricsOptions = {}): Promise<MetricsServer> {
  const list = Array.isArray(pipelines) ? (pipelines as readonly Pipeline<any>[]) : [pipelines as Pipeline<any>];
  const port = portOption(options.port, 9464);
  const access = options.access;
  if (access !== undefined && typeof access?.decide !== 'function') throw new ConfigError('access must be an AccessControl');
  const metrics = pipelineMetrics(list, options);

  const handler = (request: IncomingMessage, response: ServerResponse) => {
    handle(request, response).catch((error: unknown) => send(response, 500, 'text/plain', `${error instanceof Error ? error.message : String(error)}\n`));
  };
  const server = options.tls ? createHttpsServer(options.tls, handler) : createHttpServer(handler);

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const path = new URL(request.url ?? '/', 'http://localhost').pathname;
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.setHeader('Allow', 'GET, HEAD');
      return send(response, 405, 'text/plain', 'only GET and HEAD\n');
    }
    if (path === '/health') {
      const failed = list.filter((p) => p.state === 'failed').map((p) => p.name);
      return json(response, failed.length === 0 ? 200 : 503, { live: failed.length === 0, failed });
    }
    if (path === '/ready') {
      const pipelinesReadiness: Record<string, Readiness> = {};
      for (const pipeline of list) pipelinesReadiness[pipeline.name] = pipeline.readiness();
      const ready = Object.values(pipelinesReadiness).every((r) => r.ready);
      return json(response, ready ? 200 : 503, { ready, pipelines: pipelinesReadiness });
    }
    if (path === '/metrics') {
      if (access) {
        const decision = access.decide(presentedKey(request), METRICS_PERMISSION, 'GET /metrics');
        if (!decision.allowed) {
          if (decision.outcome === 'UNAUTHENTICATED') response.setHeader('WWW-Authenticate', 'Bearer');
          return send(response, decision.outcome === 'UNAUTHENTICATED' ? 401 : 403, 'text/plain', decision.outcome === 'UNAUTHENTICATED' ? 'a valid API key is required\n' : `permission ${METRICS_PERMISSION} is required\n`);
        }
      }
      return send(response, 200, metrics.registry.contentType, await metrics.registry.metrics());
    }
    return send(response, 404, 'text/plain', 'not found: /metrics, /health, /ready\n');
  }

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, options.host ?? '127.0.0.1', () => resolve());
    });
  } catch (error) {
    metrics.close();
    throw error;
  }
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      metrics.close();
      server.close(() => resolve());
      server.closeIdleConnections();
    }));
  return { url: `${options.tls ? 'https' : 'http'}://${host}:${address.port}`, registry: metrics.registry, close, [Symbol.asyncDispose]: close };
}

function json(response: ServerResponse, status: number, body: unknown): void {
  send(response, status, 'application/json', JSON.stringify(body) + '\n');
}

function send(response: ServerResponse, status: number, contentType: string, body: string): void {
  if (response.headersSent) return void response.end();
  response.writeHead(status, { 'Content-Type': contentType, 'Cache-Control': 'no-store' });
  response.end(body);
}
