/**
 * The thread cache sinks pack large encoded batches on (see `PackWorker` in ./cache): it
 * gets a batch's rows as bytes, writes its Redis commands as `queuePuts` does, and hands
 * back their bytes. The sink's JS thread, where a pipeline's parsing and mapping run too,
 * then only copies the rows and sends the bytes.
 */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort } from 'node:worker_threads';
import { CacheKeys, PACK_NICE, queuePuts, type PackReply, type PackRequest } from './cache';

// Below the pipeline's thread, which bounds the pipeline: on cores the pipeline, the engine and
// Redis share, packing waits for it rather than it for packing (Linux: a thread's own nice).
try {
  setPriority(Number(readlinkSync('/proc/thread-self').split('/').pop()), PACK_NICE);
} catch {
  // Elsewhere the worker runs at the process's priority.
}

/** The keys of each layout a batch came with, by its JSON. */
const keysByLayout = new Map<string, CacheKeys>();

parentPort!.on('message', ({ id, layout, body, ends, columns, now }: PackRequest) => {
  try {
    let keys = keysByLayout.get(layout);
    if (keys === undefined) keysByLayout.set(layout, (keys = new CacheKeys(JSON.parse(layout) as CacheKeys['layout'])));
    const chunks: { bytes: Uint8Array; commands: (readonly [string, number])[] }[] = [];
    const moved: ArrayBuffer[] = [];
    const unqueued = queuePuts(
      (bytes, commands) => {
        // A Buffer of its own is moved; one in Node's shared pool (a few KiB) is copied.
        const chunk = bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.length ? bytes : new Uint8Array(bytes);
        moved.push(chunk.buffer as ArrayBuffer);
        chunks.push({ bytes: chunk, commands: commands.slice() });
      },
      keys,
      [],
      now,
      // The ends are read by index only: a Float64Array reads as the array it was made from.
      { body: Buffer.from(body.buffer, body.byteOffset, body.length), ends: ends as unknown as number[], ...(columns && { columns }) },
    );
    const reply: PackReply = { id, chunks, unqueued };
    parentPort!.postMessage(reply, moved);
  } catch (error) {
    const reply: PackReply = { id, error: error instanceof Error ? (error.stack ?? error.message) : String(error) };
    parentPort!.postMessage(reply);
  }
});
