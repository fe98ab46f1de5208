import { expect } from 'chai';
import fc from 'fast-check';
import { from, lastValueFrom, toArray } from 'rxjs';
import { ConfigError } from '../../../lib/errors';
import { isCardSecretName, luhn, mask, maskCardNumber, type MaskOptions } from '../../../operators/mask';
import { Recorder } from '../../helpers';

function runSync(values: unknown[], options: MaskOptions = {}) {
  const recorder = new Recorder();
  const out: any[] = [];
  from(values.map((v) => recorder.envelope(v))).pipe(mask(options)).subscribe((e) => out.push(e.value));
  return { out, recorder };
}

/** A Luhn-valid card number with `length` digits starting with `prefix`. */
function card(prefix: string, length: number, fill = '0'): string {
  const body = (prefix + fill.repeat(length)).slice(0, length - 1);
  for (let check = 0; check <= 9; check++) if (luhn(body + check)) return body + check;
  throw new Error('unreachable');
}

describe('mask', () => {
  it('masks card numbers to BIN + last 4, found by path and by name, and removes CVV fields of any spelling', async () => {
    const recorder = new Recorder();
    const input = recorder.envelope({
      booking_id: 'B1',
      payment: { card_number: '4111 1111 1111 1111', CVV2: '123', brand: 'VISA', instrument: '5555-5555-5555-4444', 'Card-Verification-Value': '999' },
      cards: [{ pan: 378282246310005, securityCode: '1234', expiry: '12/29' }],
      cvc: 321,
      card: 'VISA',
    });
    input.raw = '{"pan":"4111111111111111","cvv":"123"}';
    const out = await lastValueFrom(from([input]).pipe(mask({ cardFields: ['payment.instrument'] }), toArray()));
    expect(out[0]!.value).to.deep.equal({
      booking_id: 'B1',
      payment: { card_number: '411111******1111', brand: 'VISA', instrument: '555555******4444' },
      cards: [{ pan: '378282*****0005', expiry: '12/29' }],
      card: 'VISA',
    });
    expect(out[0]!.raw, 'the received payload is dropped once masked').to.equal(undefined);
  });

  it('redacts a card field that does not hold a valid card number, and keeps masked text as it is', () => {
    expect(maskCardNumber('4111 1111 1111 1112')).to.equal('[redacted]'); // Luhn fails
    expect(maskCardNumber('4111x1111y1111z1111')).to.equal('[redacted]');
    expect(maskCardNumber('12345')).to.equal('[redacted]');
    expect(maskCardNumber({ n: 1 })).to.equal('[redacted]');
    expect(maskCardNumber('411111******1111')).to.equal('411111******1111');
    const { out } = runSync([{ x: { y: '4111111111111112' } }], { cardFields: ['x.y'] });
    expect(out).to.deep.equal([{ x: { y: '[redacted]' } }]);
  });

  it('removes further secrets by path', () => {
    const { out } = runSync([{ pay: { sc: '123', ref: 'r' }, list: ['a', 'b'] }], { removeFields: ['pay.sc', 'list.*'] });
    expect(out).to.deep.equal([{ pay: { ref: 'r' }, list: ['[redacted]', '[redacted]'] }]);
  });

  it('recognises security-code names from unknown vendors, and leaves look-alikes alone', () => {
    for (const name of ['cvv', 'CVV', 'cvv2', 'CVC2', 'card_cvc', 'cardCvv', 'cvn', 'CID', 'card_cid', 'csc', 'securityCode', 'card-security-code', 'card_verification_value', 'CardVerificationCode', 'cav2'])
      expect(isCardSecretName(name), name).to.equal(true);
    for (const name of ['card_number', 'customer_id', 'currency', 'city', 'discount_code']) expect(isCardSecretName(name), name).to.equal(false);
  });

  it('dead-letters a record nested too deep to check, without its payload', () => {
    let deep: any = { cvv: '123' };
    for (let i = 0; i < 70; i++) deep = { d: deep };
    const { out, recorder } = runSync([deep]);
    expect(out).to.deep.equal([]);
    expect(recorder.rejected.map((r) => [r.failure.code, r.envelope.raw])).to.deep.equal([['MASK_DEPTH', '"[redacted]"']]);
  });

  it('refuses bad options at construction, with the rule', () => {
    expect(() => mask({ cardFields: [] })).to.throw(ConfigError, 'cardFields must be a non-empty array of field paths');
    expect(() => mask({ removeFields: ['a.'] })).to.throw(ConfigError, 'removeFields[0] must be dotted names, with * for every array element, got "a."');
    expect(() => mask({ cardsByName: 'yes' as never })).to.throw(ConfigError, 'cardsByName must be true or false, got "yes"');
    // null is not "the default": it is refused, as fromInbox's alignBatches refuses it.
    expect(() => mask({ cardsByName: null as never })).to.throw(ConfigError, 'cardsByName must be true or false, got null');
  });

  const cardNumber = fc
    .tuple(fc.stringMatching(/^[1-9]\d{5}$/), fc.integer({ min: 12, max: 19 }), fc.stringMatching(/^\d{19}$/), fc.constantFrom('', ' ', '-'))
    .map(([bin, length, fill, sep]) => {
      const digits = card(bin, length, fill);
      return { digits, text: sep ? digits.replace(/(\d{4})(?=\d)/g, `$1${sep}`) : digits };
    });

  it('property: masking never reveals more than BIN + last 4 of a card number', () => {
    fc.assert(
      fc.property(cardNumber, ({ digits, text }) => {
        const { out } = runSync([{ card_number: text, payment: { pan: text } }]);
        for (const masked of [out[0].card_number, out[0].payment.pan] as string[]) {
          expect(masked).to.equal(digits.slice(0, 6) + '*'.repeat(digits.length - 10) + digits.slice(-4));
          expect(masked.replace(/\D/g, '').length).to.equal(10);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('property: any value in a card field comes out with at most 10 of its digits, all of them BIN or last 4', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.stringMatching(/^[\d -]{0,30}$/), fc.integer(), fc.jsonValue()), (value) => {
        const { out } = runSync([{ v: value }], { cardFields: ['v'], cardsByName: false });
        const masked = out[0].v;
        if (value === null) {
          expect(masked).to.equal(null); // nothing there to mask
          return;
        }
        if (masked === '[redacted]') return;
        const digits = String(value).replace(/\D/g, '');
        expect(masked).to.equal(digits.slice(0, 6) + '*'.repeat(digits.length - 10) + digits.slice(-4));
      }),
      { numRuns: 500 },
    );
  });

  const secretName = fc
    .tuple(fc.constantFrom('cvv', 'cvc', 'cvv2', 'cvc2', 'cvn', 'cid', 'csc', 'security code', 'card verification value', 'card verification code'), fc.constantFrom('', 'card ', 'payment '), fc.constantFrom('_', '-', '', ' ', '.'), fc.boolean())
    .map(([base, prefix, sep, upper]) => {
      const name = (base === 'cid' || base === 'csc' ? (prefix === 'card ' ? prefix : '') + base : prefix + base).split(' ').join(sep);
      return upper ? name.toUpperCase() : name;
    })
    .filter((name) => !name.includes('.'));

  it('property: no CVV field survives any input, at any depth', () => {
    const withSecrets = fc.letrec((tie) => ({
      node: fc.oneof({ maxDepth: 4 }, fc.jsonValue({ maxDepth: 1 }), fc.array(tie('node'), { maxLength: 3 }), tie('object')),
      object: fc.tuple(fc.dictionary(fc.string({ maxLength: 6 }), tie('node'), { maxKeys: 4 }), fc.array(fc.tuple(secretName, fc.oneof(fc.string(), fc.integer())), { maxLength: 3 })).map(([plain, secrets]) => {
        const o: Record<string, unknown> = { ...plain };
        for (const [name, value] of secrets) o[name] = value;
        return o;
      }),
    }));
    fc.assert(
      fc.property(withSecrets.object, (record) => {
        const { out } = runSync([record]);
        const survivors: string[] = [];
        JSON.stringify(out[0], (key, value) => {
          if (key !== '' && isCardSecretName(key)) survivors.push(key);
          return value;
        });
        expect(survivors).to.deep.equal([]);
      }),
      { numRuns: 300 },
    );
  });
});
