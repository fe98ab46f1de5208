/**
 * Native for a client that named its protocol revision (`client_protocol_version`, as
 * clickhouse-go and Grafana send it). The embedded engine writes Native as for revision 0:
 * a block is its column and row counts, then per column its name, type and data. Clients
 * past revision 0 read a block-info header first (overflow flag, bucket number), and past
 * 54454 a byte per column after its type that says whether a custom serialization follows
 * (never, here: the engine wrote every column in full). Data is the same in both, so a
 * block is rewritten by walking its columns, which needs each type's size on the wire.
 */
const BLOCK_INFO = Buffer.from([1, 0, 2, 0xff, 0xff, 0xff, 0xff, 0]);
/** DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION */
const CUSTOM_SERIALIZATION = 54454;

const FIXED: Readonly<Record<string, number>> = {
  UInt8: 1, Int8: 1, Bool: 1, Enum8: 1, Nothing: 1,
  UInt16: 2, Int16: 2, Date: 2, Enum16: 2, BFloat16: 2,
  UInt32: 4, Int32: 4, Float32: 4, Date32: 4, DateTime: 4, IPv4: 4, Decimal32: 4,
  UInt64: 8, Int64: 8, Float64: 8, DateTime64: 8, Decimal64: 8, Time: 4, Time64: 8,
  UInt128: 16, Int128: 16, UUID: 16, IPv6: 16, Decimal128: 16,
  UInt256: 32, Int256: 32, Decimal256: 32,
};

/** Rewrites the Native blocks in `chunk` (whole blocks, as the engine streams them) for `revision`. */
export function nativeForRevision(chunk: Uint8Array, revision: number): Buffer {
  if (revision <= 0) return Buffer.from(chunk);
  const input = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  const parts: Buffer[] = [];
  let at = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      if (at >= input.length) throw new Error('Native block cut short');
      const byte = input[at++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
  };
  const string = (): string => {
    const length = varint();
    at += length;
    return input.toString('utf8', at - length, at);
  };
  const skip = (type: string, rows: number): void => {
    const open = type.indexOf('(');
    const name = open < 0 ? type : type.slice(0, open);
    const args = open < 0 ? [] : splitArguments(type.slice(open + 1, -1));
    if (FIXED[name] !== undefined) at += FIXED[name] * rows;
    else if (name === 'String') {
      for (let i = 0; i < rows; i++) {
        const length = varint();
        at += length;
      }
    }
    else if (name === 'FixedString') at += Number(args[0]) * rows;
    else if (name === 'Decimal') at += decimalSize(Number(args[0])) * rows;
    else if (name === 'Nullable') {
      at += rows;
      skip(args[0]!, rows);
    } else if (name === 'Array' || name === 'Map') {
      const total = rows === 0 ? 0 : Number(input.readBigUInt64LE(at + (rows - 1) * 8));
      at += rows * 8;
      if (name === 'Array') skip(args[0]!, total);
      else for (const element of args) skip(element, total);
    } else if (name === 'Tuple') {
      for (const element of args) skip(element.replace(/^[A-Za-z_][A-Za-z0-9_]* (?=[A-Z])/, ''), rows);
    } else throw new Error(`Native for client revision ${revision} cannot carry ${type} from the embedded store; ask for RowBinary`);
    if (at > input.length) throw new Error('Native block cut short');
  };
  while (at < input.length) {
    const start = at;
    const columns = varint();
    const rows = varint();
    parts.push(BLOCK_INFO, input.subarray(start, at));
    for (let column = 0; column < columns; column++) {
      const headerStart = at;
      string();
      const type = string();
      parts.push(input.subarray(headerStart, at));
      if (revision >= CUSTOM_SERIALIZATION) parts.push(Buffer.from([0]));
      const dataStart = at;
      if (rows > 0) skip(type, rows);
      parts.push(input.subarray(dataStart, at));
    }
  }
  return Buffer.concat(parts);
}

function decimalSize(precision: number): number {
  return precision <= 9 ? 4 : precision <= 18 ? 8 : precision <= 38 ? 16 : 32;
}

/** Top-level, comma-separated arguments of a type (`Map(String, Array(UInt8))` → two). */
function splitArguments(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === "'" && text[i - 1] !== '\\') quoted = !quoted;
    else if (quoted) continue;
    else if (char === '(') depth++;
    else if (char === ')') depth--;
    else if (char === ',' && depth === 0) {
      parts.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(text.slice(start).trim());
  return parts;
}
