import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { delay, tempDir } from '../../helpers';
import { caughtUp, committedOffsets, createServedTopics, createTopic, produce, readAll, testKafka } from '../../kafka';
import { ensureKafka, ensureRedis } from '../../services';

const run = promisify(execFile);
const ROOT = join(__dirname, '..', '..', '..', '..');
const CLUSTER_SCRIPT = join(ROOT, 'scripts', 'deploy', 'clickhouse-cluster.sh');

interface Block {
  /** `README.md:31`: the file and line of the opening fence. */
  where: string;
  code: string;
}

/** Every ```ts block of README.md and docs/*.md. */
function typeScriptBlocks(): Block[] {
  const files = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
  const blocks: Block[] = [];
  for (const file of files) {
    const lines = readFileSync(join(ROOT, file), 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      if (!/^```(ts|typescript)\s*$/.test(lines[i]!)) continue;
      const start = i;
      const code: string[] = [];
      for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) code.push(lines[i]!);
      blocks.push({ where: `${file}:${start + 1}`, code: code.join('\n') });
    }
  }
  return blocks;
}

type Output = RegExp | string;
const CLUSTER_TABLES = [
  'bookings: Distributed',
  'bookings_local: ReplicatedReplacingMergeTree',
  'dead_letters: Distributed',
  'dead_letters_local: ReplicatedReplacingMergeTree',
  'tributary_migrations: ReplicatedMergeTree',
  '',
].join('\n');
interface Expected {
  /** A line of the block's code that finds it. */
  contains: string;
  /** All it prints (a string), or a pattern; per module kind where the two runs differ. */
  prints: Output | { esm: Output; cjs: Output };
  /** A program that runs until SIGTERM: what it needs before it starts (the variables it gets), when to stop it, and what to check after. */
  service?: {
    before(): Promise<NodeJS.ProcessEnv>;
    stopWhen(env: NodeJS.ProcessEnv): Promise<void>;
    after(env: NodeJS.ProcessEnv): Promise<void>;
  };
}

/**
 * What each block prints (all of it, or a pattern), found by a line of its code. The blocks
 * read their ports, keys and service addresses from environment variables, with defaults
 * for a reader's machine; `exampleEnv` points them at the test's services.
 */
const EXPECTED_OUTPUT: Expected[] = [
  { contains: "recordOperator('to-cents',", prints: `1 1 [ { id: 'a', cents: 1250 } ]\n[ 'to-cents: amount is not a number: "n/a"' ]\n` },
  { contains: "fromFiles({ paths: [join(samplesDir, 'skyway')], vendor: 'skyway' })", prints: /^16 read, 15 written, 1 dead-lettered\n\[ \{ vendor: 'skyway', bookings: 15 \} \]\n$/ },
  // The booking written through the fan-out and read back from Redis: three reads, three hits.
  { contains: "toRedisCache({ url: REDIS_URL, customerField: 'customer_token' })", prints: /^confirmed\n1 1\n\{ hits: 3, misses: 0 \}\n$/ },
  // The analyst's key reads the 54 sample bookings; an INSERT with it is refused (403, READONLY).
  { contains: 'serveQueries({ client: clickhouse, users: { analyst: ANALYST_KEY }, port: PORT })', prints: /^200 54\n403 164\n$/ },
  // A signed post with the vendor's key is answered 200, and its booking is in the table.
  { contains: "fromWebhook({", prints: /^200\n\[ \{ vendor: 'tripwire', booking_id: 'TW-77821', status: 'confirmed' \} \]\n$/ },
  // The staylodge sample served by `vendorApi` in three cursor pages, with the bearer token checked.
  { contains: 'fromPoll({', prints: /^14 read, 13 written, 1 dead-lettered\n$/ },
  // Prometheus' scrape with its key: the sample vendors' 68 records, as 54 written and 12 + 2 dead-lettered.
  {
    contains: 'serveMetrics(pipeline, { port: PORT, access })',
    prints: [
      'tributary_records_total{pipeline="bookings",stage="source",outcome="in"} 68',
      'tributary_records_total{pipeline="bookings",stage="sink",outcome="written"} 54',
      'tributary_records_total{pipeline="bookings",stage="sink",outcome="nacked"} 0',
      'tributary_records_total{pipeline="bookings",stage="normalize",outcome="dead_lettered"} 12',
      'tributary_records_total{pipeline="bookings",stage="source",outcome="dead_lettered"} 2',
      '',
    ].join('\n'),
  },
  // The tripwire sample sealed per customer; the support desk reads both customers' travellers,
  // then Ada's are erased and hers read as anonymised; its key may not query; all of it audited.
  {
    contains: 'subjectErasure({ client, subjectKeys, audit, tables: [',
    prints: [
      '[',
      `  '[{"name":"Ada Lovelace","type":"adult","email":"ada@example.com"},{"name":"Byron King","type":"child"}]',`,
      `  '[{"name":"Grace Hopper","type":"adult","email":"grace@navy.example"}]'`,
      ']',
      '1 [',
      "  { table: 'bookings', action: 'anonymise', rows: 1 },",
      "  { table: 'dead_letters', action: 'delete', rows: 0 }",
      ']',
      '[',
      `  '""',`,
      `  '[{"name":"Grace Hopper","type":"adult","email":"grace@navy.example"}]'`,
      ']',
      '403',
      '[',
      "  { type: 'access.denied', events: 1 },",
      "  { type: 'decrypt', events: 4 },",
      "  { type: 'erasure.done', events: 1 },",
      "  { type: 'erasure.request', events: 1 },",
      "  { type: 'pipeline.start', events: 1 },",
      "  { type: 'pipeline.stop', events: 1 }",
      ']',
      '',
    ].join('\n'),
  },
  // The skyway sample, a record a message, on a fresh topic: stopped once the group has committed
  // every offset; the refused record is on the dead-letter topic with its reason in the headers.
  {
    contains: "fromKafka({ brokers, groupId: 'bookings-store'",
    prints: '16 read, 15 written, 1 dead-lettered\n',
    service: {
      async before() {
        const brokers = await ensureKafka();
        const { topic } = await createTopic(brokers, 1, 'bookings-raw');
        // As the README asks: a topic the producer would create logs an error while the broker makes it.
        const admin = testKafka(brokers).admin();
        await admin.connect();
        await createServedTopics(admin, [{ topic: `${topic}.dead` }]);
        await admin.disconnect();
        const dir = join(ROOT, 'examples', 'bookings', 'data', 'skyway');
        const records = readdirSync(dir).sort().flatMap((file) => JSON.parse(readFileSync(join(dir, file), 'utf8')) as unknown[]);
        await produce(brokers, topic, records.map((record) => ({ value: JSON.stringify(record), headers: { vendor: 'skyway' } })));
        // Finds the group's coordinator (and creates the offsets topic of a new broker) before the program asks.
        await committedOffsets(brokers, 'bookings-store', topic);
        return { KAFKA_BROKERS: brokers.join(','), KAFKA_TOPIC: topic };
      },
      async stopWhen(env) {
        const brokers = env.KAFKA_BROKERS!.split(',');
        for (const deadline = Date.now() + 120_000; !(await caughtUp(brokers, 'bookings-store', env.KAFKA_TOPIC!)); ) {
          if (Date.now() > deadline) throw new Error('the Kafka example did not commit every offset');
          await delay(200);
        }
      },
      async after(env) {
        const brokers = env.KAFKA_BROKERS!.split(',');
        const [letter, ...more] = await readAll(brokers, `${env.KAFKA_TOPIC}.dead`, 1);
        expect(more).to.deep.equal([]);
        expect([letter!.headers['tributary-stage'], letter!.headers['tributary-vendor']]).to.deep.equal(['normalize', 'skyway']);
        const admin = testKafka(brokers).admin();
        await admin.connect();
        await admin.deleteTopics({ topics: [env.KAFKA_TOPIC!, `${env.KAFKA_TOPIC}.dead`] });
        await admin.disconnect();
      },
    },
  },
  // Two ClickHouse replicas with ZooKeeper: the ES module (run first) applies both migrations
  // through one replica, and the CommonJS run, through the other, finds them applied.
  { contains: 'serverClickHouse({ url: CLICKHOUSE_URL })', prints: { esm: `applied [ 1, 2 ]\n${CLUSTER_TABLES}`, cjs: `applied []\n${CLUSTER_TABLES}` } },
];

/**
 * Runs a compiled example; one that serves until stopped gets SIGTERM once `stopWhen`
 * resolves. Fails with its output when it exits with an error, or has not exited two
 * minutes on (a server left open).
 */
async function runProgram(file: string, cwd: string, env: NodeJS.ProcessEnv, stopWhen?: () => Promise<void>): Promise<{ stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [file], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const hung = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const exited = new Promise<void>((resolve, reject) =>
    child.on('close', (code, signal) => {
      clearTimeout(hung);
      if (code === 0) resolve();
      else reject(new Error(`${signal === 'SIGKILL' ? 'did not exit' : `exit ${code ?? signal}`}: ${stderr || stdout}`));
    }),
  );
  if (stopWhen) {
    const early = exited.then(() => Promise.reject(new Error(`exited before it was stopped: ${stderr || stdout}`)));
    try {
      await Promise.race([stopWhen(), early]);
    } catch (error) {
      child.kill('SIGKILL');
      throw error;
    }
    child.kill('SIGTERM');
  }
  await exited;
  return { stdout, stderr };
}

/** The staylodge sample as a vendor's REST API: five reservations a page, a cursor to the next, a bearer token required. */
function vendorApi(token: string): Promise<Server> {
  const reservations = readFileSync(join(ROOT, 'examples', 'bookings', 'data', 'staylodge', 'reservations.ndjson'), 'utf8').split('\n').filter(Boolean);
  const server = createServer((request, response) => {
    if (request.headers.authorization !== `Bearer ${token}`) return void response.writeHead(401).end();
    const from = Number(new URL(request.url ?? '/', 'http://localhost').searchParams.get('cursor') ?? 0);
    const next = from + 5 < reservations.length ? String(from + 5) : undefined;
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(`{"data":[${reservations.slice(from, from + 5).join(',')}],"meta":${JSON.stringify({ next_cursor: next })}}`);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

describe('the examples in README.md and docs/ run as written against the packed package', function () {
  this.timeout(300_000);
  const blocks = typeScriptBlocks();
  let scratch: ReturnType<typeof tempDir>;
  let api: Server | undefined;
  /** The cluster's two replicas (scripts/deploy/clickhouse-cluster.sh), for the deploy docs' `migrate({ cluster })`. */
  let cluster: string[] = [];
  let clusterEnv: NodeJS.ProcessEnv | undefined;
  /** The variables the blocks read: every server on a port of its own choosing, the test's Redis, the vendor API above. */
  let exampleEnv: NodeJS.ProcessEnv;

  before(async function () {
    this.timeout(600_000); // the first run installs Debian's redis-server, clickhouse-server and zookeeper
    scratch = tempDir('tributary-examples-');
    const token = randomUUID();
    api = await vendorApi(token);
    // Its ports follow this run's ClickHouse server's, so runs with their own ports do not meet.
    const http = Number(process.env.CLUSTER_HTTP_PORT ?? Number(process.env.CLICKHOUSE_HTTP_PORT ?? 18123) + 10);
    const tcp = Number(process.env.CLUSTER_TCP_PORT ?? Number(process.env.CLICKHOUSE_TCP_PORT ?? 19000) + 10);
    clusterEnv = {
      ...process.env,
      CLUSTER_HTTP_PORT: String(http),
      CLUSTER_TCP_PORT: String(tcp),
      CLUSTER_INTERSERVER_PORT: String(tcp + 10),
      ZOOKEEPER_PORT: String(tcp + 20),
      TRIBUTARY_DEPLOY_DIR: join(scratch.path, 'deploy'),
    };
    for (const command of ['install', 'start']) {
      await run('bash', [CLUSTER_SCRIPT, command], { env: clusterEnv }).catch((e: { stdout?: string; stderr?: string }) => {
        throw new Error(`scripts/deploy/clickhouse-cluster.sh ${command} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
      });
    }
    cluster = [`http://127.0.0.1:${http}`, `http://127.0.0.1:${http + 1}`];
    exampleEnv = {
      ...process.env,
      QUERY_PORT: '0',
      METRICS_PORT: '0',
      WEBHOOK_PORT: '0',
      ANALYST_KEY: randomUUID(),
      TRIPWIRE_SECRET: randomUUID(),
      REDIS_URL: await ensureRedis(),
      STAYLODGE_API: `http://127.0.0.1:${(api.address() as AddressInfo).port}/v1/reservations`,
      STAYLODGE_TOKEN: token,
      // The booking schema needs ClickHouse 22.2; the cluster's servers are 18.16.
      MIGRATIONS_DIR: join(ROOT, 'test', 'fixtures', 'clickhouse-18.16-bookings'),
    };
    // The package as published: npm pack's tarball, unpacked where an install puts it.
    const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', scratch.path], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
    const tarball = join(scratch.path, (JSON.parse(stdout) as { filename: string }[])[0]!.filename);
    const modules = join(scratch.path, 'node_modules');
    mkdirSync(join(modules, 'tributary'), { recursive: true });
    await run('tar', ['-xzf', tarball, '-C', join(modules, 'tributary'), '--strip-components=1']);
    // Its dependencies (and theirs) as npm installed them here, without the development ones,
    // so a type or module the package needs but does not declare fails the test.
    // npm ls exits 1 over a stray package in node_modules but still lists the tree.
    const { stdout: tree } = await run('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 }).catch(
      (e: { stdout: string }) => e,
    );
    const top = join(ROOT, 'node_modules');
    const installed = tree.split('\n').filter((p) => dirname(p) === top || dirname(dirname(p)) === top && basename(dirname(p)).startsWith('@'));
    // @types/node: what any TypeScript project on Node has.
    for (const path of [...installed, join(top, '@types', 'node')]) {
      const target = join(modules, relative(top, path));
      if (existsSync(target)) continue;
      mkdirSync(dirname(target), { recursive: true });
      symlinkSync(path, target, 'dir');
    }
    const tsconfig = (module: string) =>
      JSON.stringify({ compilerOptions: { target: 'ES2022', module, moduleResolution: module, strict: true, skipLibCheck: true, types: ['node'] }, include: ['*.ts'] });
    for (const [kind, type] of [
      ['esm', 'module'],
      ['cjs', 'commonjs'],
    ] as const) {
      mkdirSync(join(scratch.path, kind));
      writeFileSync(join(scratch.path, kind, 'package.json'), JSON.stringify({ name: `examples-${kind}`, private: true, type }));
      writeFileSync(join(scratch.path, kind, 'tsconfig.json'), tsconfig('nodenext'));
      blocks.forEach((block, i) => writeFileSync(join(scratch.path, kind, `example${i + 1}.ts`), `// ${block.where}\n${block.code}\n`));
    }
  });
  after(async () => {
    if (clusterEnv) await run('bash', [CLUSTER_SCRIPT, 'stop'], { env: clusterEnv });
    scratch?.remove();
    await new Promise((resolve) => (api ? api.close(resolve) : resolve(undefined)));
  });

  it('finds the examples, each with what it prints', () => {
    expect(blocks.length).to.be.at.least(1);
    for (const block of blocks) expect(EXPECTED_OUTPUT.filter((e) => block.code.includes(e.contains)), `${block.where}: its entry in EXPECTED_OUTPUT`).to.have.length(1);
    // An entry that finds no block (its code changed) is a check that no longer runs.
    for (const e of EXPECTED_OUTPUT) expect(blocks.some((block) => block.code.includes(e.contains)), e.contains).to.equal(true);
  });

  it("the packed package's tributary command runs the demo, status and help in a project", async () => {
    const cwd = join(scratch.path, 'cli');
    mkdirSync(cwd);
    const bin = join(scratch.path, 'node_modules', 'tributary', 'bin', 'tributary.js');
    const { TRIBUTARY_PATH: _path, TRIBUTARY_QUERY_URL: _url, ...env } = process.env;
    expect((await run(process.execPath, [bin, '--help'], { cwd, env })).stdout).to.match(/^Usage: tributary <command> \[options\]/);
    const demo = await run(process.execPath, [bin, 'demo'], { cwd, env });
    expect(demo.stdout).to.match(/bookings\s+dead_letters\n54\s+14/);
    const status = await run(process.execPath, [bin, 'status'], { cwd, env });
    expect(status.stdout).to.contain(`store: ${join(cwd, '.tributary', 'demo')}`).and.to.contain('bookings: 54, dead letters: 14');
  });

  for (const kind of ['esm', 'cjs'] as const) {
    it(`compiles with tsc --strict and runs as ${kind === 'esm' ? 'an ES module' : 'CommonJS'}`, async () => {
      const dir = join(scratch.path, kind);
      const tsc = await run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir]).catch((e: { stdout: string }) => e);
      expect((tsc as { stdout: string }).stdout, 'tsc').to.equal('');
      for (const [i, block] of blocks.entries()) {
        const cwd = join(dir, `run${i + 1}`);
        mkdirSync(cwd);
        const expectation = EXPECTED_OUTPUT.find((e) => block.code.includes(e.contains));
        if (!expectation) throw new Error(`${block.where} has no entry in EXPECTED_OUTPUT`);
        const env = { ...exampleEnv, CLICKHOUSE_URL: cluster[kind === 'esm' ? 0 : 1], ...(await expectation.service?.before()) };
        const { stdout, stderr } = await runProgram(join(dir, `example${i + 1}.js`), cwd, env, expectation.service && (() => expectation.service!.stopWhen(env))).catch((e: Error) => {
          throw new Error(`${block.where} failed as ${kind}: ${e.message}`);
        });
        await expectation.service?.after(env);
        expect(stderr, block.where).to.equal('');
        const prints = expectation.prints;
        const expected = typeof prints === 'string' || prints instanceof RegExp ? prints : prints[kind];
        if (typeof expected === 'string') expect(stdout, block.where).to.equal(expected);
        else expect(stdout, `${block.where}: ${JSON.stringify(stdout)}`).to.match(expected);
      }
    });
  }
});
