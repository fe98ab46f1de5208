import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { NEVER } from 'rxjs';
import { Pipeline } from '../../../lib/pipeline';
import { serveMetrics } from '../../../lib/serveMetrics';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, tempDir } from '../../helpers';

describe('serveMetrics over TLS', () => {
  it('serves HTTPS with the given certificate, at an https url', async () => {
    const dir = tempDir();
    try {
      const key = join(dir.path, 'key.pem');
      const cert = join(dir.path, 'cert.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
      const pipeline = new Pipeline({ name: 'p', source: { name: 'feed', open: () => NEVER }, sink: new MemorySink('store'), deadLetters: new MemorySink<DeadLetter>('letters') });
      const server = await serveMetrics(pipeline, { port: 0, tls: { key: readFileSync(key), cert: readFileSync(cert) } });
      try {
        expect(server.url).to.match(/^https:\/\/127\.0\.0\.1:\d+$/);
        const status = await new Promise<number>((resolve, reject) => {
          const req = request(`${server.url}/health`, { ca: readFileSync(cert) }, (response) => {
            response.resume();
            response.on('end', () => resolve(response.statusCode!));
          });
          req.on('error', reject);
          req.end();
        });
        expect(status).to.equal(200);
      } finally {
        await server.close();
      }
    } finally {
      dir.remove();
    }
  });
});
