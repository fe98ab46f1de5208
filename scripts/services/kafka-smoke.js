#!/usr/bin/env node
// Smoke test for the Kafka started by scripts/services/kafka.sh, using the
// project's own client (kafkajs). Run from the repository root:
//
//   node scripts/services/kafka-smoke.js            # fresh topic: create, produce 10
//                                                   # (idempotent), consume with a group,
//                                                   # commit, verify committed offsets
//   node scripts/services/kafka-smoke.js --check T  # verify topic T (from an earlier
//                                                   # run) still has its 10 messages and
//                                                   # its group's committed offset (after
//                                                   # a broker stop/start)
//
// Env: KAFKA_PORT (default 19092). Exits non-zero on any failure.
'use strict';

const path = require('path');
// Resolve kafkajs from the repository's node_modules even when run from elsewhere.
const { Kafka, logLevel } = require(require.resolve('kafkajs', { paths: [path.resolve(__dirname, '../..'), process.cwd()] }));

const port = Number(process.env.KAFKA_PORT || 19092);
const broker = `127.0.0.1:${port}`;
const N = 10;

function fail(msg, err) {
  console.error(`[kafka-smoke] FAILED: ${msg}`);
  if (err) {
    console.error(err && err.stack ? err.stack : err);
    if (err.partitions) console.error('partitions:', JSON.stringify(err.partitions));
    if (err.errors) console.error('errors:', err.errors);
  }
  process.exit(1);
}

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

async function committedOffset(admin, groupId, topic) {
  const res = await admin.fetchOffsets({ groupId, topics: [topic] });
  const parts = res.find((r) => r.topic === topic).partitions;
  return parts.reduce((sum, p) => sum + Math.max(0, Number(p.offset)), 0);
}

async function highWatermark(admin, topic) {
  const offs = await admin.fetchTopicOffsets(topic);
  return offs.reduce((sum, p) => sum + Number(p.high), 0);
}

async function fresh(kafka, admin) {
  const topic = `tributary-smoke-${Date.now()}-${process.pid}`;
  const groupId = `${topic}-group`;

  const created = await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 1 }], waitForLeaders: true });
  if (!created) fail(`createTopics(${topic}) returned false`);
  console.log(`[kafka-smoke] created topic ${topic}`);

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = Array.from({ length: N }, (_, i) => ({ key: `k${i}`, value: `message-${i}` }));
  const res = await producer.send({ topic, messages, acks: -1 });
  await producer.disconnect();
  console.log(`[kafka-smoke] produced ${N} messages with an idempotent producer: ${JSON.stringify(res)}`);

  const tc = Date.now();
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const seen = [];
  await withTimeout(new Promise((resolve, reject) => {
    consumer.run({
      autoCommit: false,
      eachMessage: async ({ topic: t, partition, message }) => {
        seen.push(message.value.toString());
        await consumer.commitOffsets([{ topic: t, partition, offset: (BigInt(message.offset) + 1n).toString() }]);
        if (seen.length >= N) resolve();
      },
    }).catch(reject);
  }), 30000, `consume ${N} messages`);
  await consumer.disconnect();
  console.log(`[kafka-smoke] consumer group join + consume + commit took ${Date.now() - tc} ms`);

  const expected = messages.map((m) => m.value);
  if (JSON.stringify(seen) !== JSON.stringify(expected)) fail(`consumed ${JSON.stringify(seen)}, expected ${JSON.stringify(expected)}`);
  console.log(`[kafka-smoke] consumed ${seen.length} messages in order with group ${groupId}`);

  const committed = await committedOffset(admin, groupId, topic);
  if (committed !== N) fail(`committed offset is ${committed}, expected ${N}`);
  console.log(`[kafka-smoke] committed offset for ${groupId} = ${committed}`);

  await extended(kafka, admin, topic, groupId);
  console.log(`[kafka-smoke] OK topic=${topic}`);
}

// Wider coverage of the kafkajs API surface, so that a broker version which
// dropped an old protocol version kafkajs still uses shows up here.
async function extended(kafka, admin, topic, groupId) {
  const step = async (name, fn) => {
    const t0 = Date.now();
    try {
      const r = await fn();
      console.log(`[kafka-smoke]   ok (${Date.now() - t0} ms): ${name}${r === undefined ? '' : ` -> ${typeof r === 'string' ? r : JSON.stringify(r)}`}`);
    } catch (err) {
      fail(`step "${name}"`, err);
    }
  };
  const { CompressionTypes } = require(require.resolve('kafkajs', { paths: [path.resolve(__dirname, '../..'), process.cwd()] }));
  const txTopic = `${topic}-tx`;
  const outGroup = `${topic}-txgroup`;

  await step('describeCluster', async () => (await admin.describeCluster()).brokers.length + ' broker(s)');
  await step('fetchTopicMetadata', async () => (await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length + ' partition(s)');
  await step('describeConfigs (topic)', async () => {
    const r = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: 2 /* TOPIC */, name: topic }] });
    return r.resources[0].configEntries.length + ' entries';
  });
  await step('alterConfigs (topic retention.ms)', async () => admin.alterConfigs({
    validateOnly: false, resources: [{ type: 2, name: topic, configEntries: [{ name: 'retention.ms', value: '86400000' }] }],
  }));
  await step('createPartitions (1 -> 2)', async () => admin.createPartitions({ topicPartitions: [{ topic, count: 2 }] }));
  await step('fetchTopicOffsetsByTimestamp', async () => admin.fetchTopicOffsetsByTimestamp(topic, Date.now() - 3600e3));
  await step('listGroups', async () => (await admin.listGroups()).groups.length + ' group(s)');
  await step('describeGroups', async () => (await admin.describeGroups([groupId])).groups[0].state);
  await step('setOffsets', async () => admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '5' }] }));
  await step('resetOffsets (earliest)', async () => admin.resetOffsets({ groupId, topic, earliest: true }));
  await step('setOffsets back to 10', async () => admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '10' }, { partition: 1, offset: '0' }] }));

  await step('non-idempotent producer, gzip, headers, acks=1', async () => {
    const p = kafka.producer();
    await p.connect();
    await p.send({ topic: txTopic, acks: 1, compression: CompressionTypes.GZIP, messages: [{ key: 'a', value: 'gz', headers: { h: 'v' } }] });
    await p.disconnect();
  });

  await step('transactional producer: commit + sendOffsets', async () => {
    const p = kafka.producer({ transactionalId: `${topic}-txid`, idempotent: true, maxInFlightRequests: 1 });
    await p.connect();
    const tx = await p.transaction();
    await tx.send({ topic: txTopic, messages: [{ value: 'tx-1' }, { value: 'tx-2' }] });
    await tx.sendOffsets({ consumerGroupId: outGroup, topics: [{ topic, partitions: [{ partition: 0, offset: '10' }] }] });
    await tx.commit();
    const tx2 = await p.transaction();
    await tx2.send({ topic: txTopic, messages: [{ value: 'aborted' }] });
    await tx2.abort();
    await p.disconnect();
    const off = await committedOffset(admin, outGroup, topic);
    if (off !== 10) throw new Error(`transactional sendOffsets committed ${off}, expected 10`);
  });

  await step('read_committed consumer + seek', async () => {
    const c = kafka.consumer({ groupId: `${topic}-rc`, readUncommitted: false });
    await c.connect();
    await c.subscribe({ topics: [txTopic], fromBeginning: true });
    const vals = [];
    let seeked = false;
    await withTimeout(new Promise((resolve, reject) => {
      c.run({
        eachMessage: async ({ message, partition }) => {
          vals.push(message.value.toString());
          if (!seeked && vals.length === 3) { seeked = true; c.seek({ topic: txTopic, partition, offset: '0' }); }
          if (vals.length >= 6) resolve();
        },
      }).catch(reject);
    }), 30000, 'read_committed consume');
    await c.disconnect();
    if (vals.includes('aborted')) throw new Error(`read_committed consumer saw an aborted message: ${vals}`);
    if (JSON.stringify(vals) !== JSON.stringify(['gz', 'tx-1', 'tx-2', 'gz', 'tx-1', 'tx-2'])) throw new Error(`unexpected values ${JSON.stringify(vals)}`);
    return vals.join(',');
  });

  // kafkajs' admin.deleteTopicRecords only looks at the admin client's cached
  // metadata (KafkaJSBrokerNotFound otherwise), so load it first.
  await step('deleteTopicRecords', async () => {
    await admin.fetchTopicMetadata({ topics: [txTopic] });
    await admin.deleteTopicRecords({ topic: txTopic, partitions: [{ partition: 0, offset: '1' }] });
    const low = (await admin.fetchTopicOffsets(txTopic))[0].low;
    if (low !== '1') throw new Error(`low watermark is ${low} after deleting records before offset 1`);
  });
  await step('deleteGroups', async () => admin.deleteGroups([`${topic}-rc`, outGroup]));
  await step('deleteTopics', async () => admin.deleteTopics({ topics: [txTopic], timeout: 10000 }));
}

async function check(kafka, admin, topic) {
  const groupId = `${topic}-group`;
  const topics = await admin.listTopics();
  if (!topics.includes(topic)) fail(`topic ${topic} not found after restart (topics: ${topics.join(', ')})`);
  const hw = await highWatermark(admin, topic);
  if (hw !== N) fail(`topic ${topic} high watermark is ${hw}, expected ${N}`);
  const committed = await committedOffset(admin, groupId, topic);
  if (committed !== N) fail(`committed offset for ${groupId} is ${committed}, expected ${N}`);
  // Read the data back too.
  const consumer = kafka.consumer({ groupId: `${topic}-reread-${Date.now()}` });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  let count = 0;
  await withTimeout(new Promise((resolve, reject) => {
    consumer.run({ eachMessage: async () => { if (++count >= N) resolve(); } }).catch(reject);
  }), 30000, `re-read ${N} messages`);
  await consumer.disconnect();
  console.log(`[kafka-smoke] OK topic ${topic} kept ${hw} messages and committed offset ${committed}`);
}

async function main() {
  const kafka = new Kafka({
    clientId: 'tributary-smoke',
    brokers: [broker],
    logLevel: logLevel.WARN,
    retry: { retries: 5 },
  });
  const admin = kafka.admin();
  await admin.connect();
  try {
    const i = process.argv.indexOf('--check');
    if (i >= 0) {
      if (!process.argv[i + 1]) fail('--check needs a topic name');
      await check(kafka, admin, process.argv[i + 1]);
    } else {
      await fresh(kafka, admin);
    }
  } finally {
    await admin.disconnect();
  }
}

main().then(() => process.exit(0), (err) => fail(`against ${broker}`, err));
