import type { IncomingMessage } from 'node:http';
import type { Transform } from 'node:stream';
import { createGunzip, createInflate } from 'node:zlib';

/** Why a request has no body to use. */
export type BodyRefusal =
  /** Past the limit (after decompression): reading stopped and what was read is dropped. */
  | 'tooLarge'
  /** Not ended within the time given. */
  | 'timeout'
  /** The sender went away before the end. */
  | 'gone'
  /** A `Content-Encoding` other than identity, or gzip and deflate where they are accepted. */
  | 'unsupportedEncoding'
  /** Compressed bytes that do not decompress. */
  | 'corrupt';

export interface ReadBodyOptions {
  /** Most bytes of body taken, counted after decompression. */
  limit: number;
  /** Longest wait for the whole body. @default no limit of its own (the server's requestTimeout) */
  timeoutMs?: number;
  /** Accept `Content-Encoding: gzip` and `deflate`, decompressed as they arrive. @default false */
  decompress?: boolean;
  /** Told of every chunk read off the socket, before decompression (for a bytes-read metric). */
  onBytes?: (bytes: number) => void;
}

/**
 * The body of an HTTP request, bounded in size and time: the HTTP servers of the library
 * (the webhook, the analyst endpoint) read every body through this.
 */
export function readBody(request: IncomingMessage, options: ReadBodyOptions): Promise<Buffer | BodyRefusal> {
  const encoding = String(request.headers['content-encoding'] ?? 'identity').toLowerCase();
  let decoder: Transform | undefined;
  if (encoding === 'gzip' && options.decompress) decoder = createGunzip();
  else if (encoding === 'deflate' && options.decompress) decoder = createInflate();
  else if (encoding !== 'identity') return Promise.resolve('unsupportedEncoding');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let length = 0;
    /** Bytes read off the socket, before decompression. */
    let rawLength = 0;
    let done = false;
    const finish = (result: Buffer | BodyRefusal) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      request.off('data', onRaw);
      request.off('end', onRawEnd);
      request.off('close', onClose);
      if (decoder) {
        request.unpipe(decoder);
        decoder.destroy();
      }
      chunks.length = 0;
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      length += chunk.length;
      if (length > options.limit) finish('tooLarge');
      else chunks.push(chunk);
    };
    const onEnd = () => finish(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, length));
    const onRaw = (chunk: Buffer) => {
      rawLength += chunk.length;
      options.onBytes?.(chunk.length);
      if (!decoder) onData(chunk);
    };
    const onRawEnd = () => {
      if (!decoder) onEnd();
    };
    // A sender that disconnects mid-body ends neither with 'end' nor always with 'error'.
    const onClose = () => {
      if (!request.complete) finish('gone');
    };
    let timer: NodeJS.Timeout | undefined;
    if (options.timeoutMs !== undefined) {
      const timeoutMs = options.timeoutMs;
      // A body that came in the packet of its headers is all read by the next microtask (its
      // 'end' follows): no timer for it.
      const declared = Number(request.headers['content-length'] ?? NaN);
      queueMicrotask(() => {
        if (!done && !(rawLength >= declared)) timer = setTimeout(() => finish('timeout'), timeoutMs);
      });
    }
    request.on('data', onRaw);
    request.on('end', onRawEnd);
    request.on('close', onClose);
    if (decoder) {
      decoder.on('data', onData);
      decoder.on('end', onEnd);
      decoder.on('error', () => finish('corrupt'));
      request.pipe(decoder);
    }
  });
}

/** A request header's value; the first one when the client sent it more than once. */
export function header(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}
