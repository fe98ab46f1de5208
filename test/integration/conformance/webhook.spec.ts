import { expect } from 'chai';
import { AccessControl } from '../../../lib/security/access';
import { post } from '../../webhookClient';
import { sourceConformance, type SourceInput } from '../../conformance/source';

const SECRET = 'conformance-secret-0123456789abcdef';
const RECORDS = 5;
const SENDERS = 16;

/**
 * fromWebhook: 16 senders post 5-record NDJSON bodies; its promise is that every request
 * answered 2xx is stored, all of its records. A request not answered 2xx is sent again by
 * its vendor (after a restart, to the new address): only its records may be stored twice.
 */
sourceConformance('fromWebhook', {
  kind: 'webhook',
  async input(_dir, promise): Promise<SourceInput> {
    const key = AccessControl.issueKey('acme', ['acme']);
    const answered = new Set<string>();
    const unanswered = new Set<string>();
    const statuses: string[] = [];
    let next = 0;
    let halted = false;
    let senders: Promise<void>[] = [];
    const bodyOf = (id: string) => Array.from({ length: RECORDS }, (_, i) => JSON.stringify({ ref: `${id}-${i + 1}` })).join('\n');
    const send = async (url: string, id: string): Promise<boolean> => {
      try {
        const answer = await post(`${url}/webhooks/acme`, bodyOf(id), { key: key.token, secret: SECRET, id, contentType: 'application/x-ndjson' });
        statuses.push(`${answer.status} ${answer.status === 200 ? '' : (JSON.parse(answer.body) as { error?: string }).error ?? ''}`.trim());
        if (answer.status >= 200 && answer.status < 300) {
          answered.add(id);
          unanswered.delete(id);
          return true;
        }
      } catch {
        statuses.push('no answer');
      }
      unanswered.add(id);
      return false;
    };
    // A sender posts until halted, or until the server is gone (no answer at all).
    const sender = async (url: string) => {
      while (!halted) {
        const id = `w-${++next}`;
        unanswered.add(id);
        if (!(await send(url, id)) && statuses[statuses.length - 1] === 'no answer') return;
      }
    };
    return {
      options: { keyHash: key.record.secretHash, secret: SECRET },
      // 40 requests a batch: batches cut by count or by time hold whole requests.
      batch: { rows: 40 * RECORDS, maxWaitMs: 20 },
      writesBefore: 5,
      slowMs: 20,
      endless: true,
      refs: () => [...answered, ...unanswered].flatMap((id) => Array.from({ length: RECORDS }, (_, i) => `${id}-${i + 1}`)),
      promised: () => [...answered].flatMap((id) => Array.from({ length: RECORDS }, (_, i) => `${id}-${i + 1}`)),
      midway: () => answered.size >= (promise === 'kill' ? 300 : 100),
      feed(url) {
        senders = Array.from({ length: SENDERS }, () => sender(url));
      },
      async halt() {
        halted = true;
        await Promise.all(senders);
      },
      async redeliver(url) {
        // The vendor retries every request not answered 2xx, each until it is.
        const retries = [...unanswered];
        const worker = async () => {
          for (let id = retries.shift(); id !== undefined; id = retries.shift()) {
            for (let attempt = 1; !(await send(url, id)); attempt++) if (attempt > 20) throw new Error(`${id} never answered 2xx: ${statuses.slice(-3).join(', ')}`);
          }
        };
        await Promise.all(Array.from({ length: SENDERS }, worker));
      },
      afterFirst({ placedKill }) {
        if (promise === 'kill') {
          // The timed kill comes once 300 were answered; a kill at a set point, elsewhere.
          if (!placedKill) expect(answered.size).to.be.at.least(300);
          // Requests cut off by the kill got no 2xx; some of them may be stored all the same
          // (written, but killed before the answer), which is what the vendor's retry covers.
          expect(statuses.filter((s) => s === 'no answer').length, 'requests in flight at the kill').to.be.at.least(1);
        }
        if (promise === 'nack') expect(statuses, 'requests whose records could not be stored').to.include('503 NOT_STORED');
      },
    };
  },
});
