import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { signWebhook } from '../connectors/webhook';

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface PostOptions {
  /** API key, sent as a Bearer token. */
  key?: string;
  contentType?: string;
  /** Sign with this secret (omit to send no signature headers). */
  secret?: string;
  id?: string;
  /** Unix seconds. @default now */
  timestamp?: number;
  /** Replace the body after signing (a tampered request). */
  sendInstead?: string | Buffer | Readable;
  /** Extra headers. */
  headers?: Record<string, string>;
  /** CA for HTTPS. */
  ca?: string | Buffer;
  method?: string;
}

/** Sends one request to a webhook source the way a vendor does (or an attacker). */
export function post(url: string, body: string | Buffer, options: PostOptions = {}): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': options.contentType ?? 'application/json', ...options.headers };
  if (options.key) headers.authorization = `Bearer ${options.key}`;
  if (options.secret) {
    Object.assign(headers, signWebhook(options.secret, options.id ?? `msg_${Math.random().toString(36).slice(2)}`, options.timestamp ?? Math.floor(Date.now() / 1000), body));
  }
  const payload = options.sendInstead ?? body;
  const target = new URL(url);
  const request = target.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<Answer>((resolve, reject) => {
    const req = request(target, { method: options.method ?? 'POST', headers, ...(options.ca ? { ca: options.ca } : {}) }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    // A server that refuses a large body closes the connection while we still write it:
    // the answer has already come, so the write error is expected.
    req.on('error', reject);
    if (typeof payload === 'string' || Buffer.isBuffer(payload)) req.end(payload);
    else {
      payload.on('error', () => undefined);
      payload.pipe(req);
    }
  });
}
