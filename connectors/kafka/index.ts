export { type KafkaConnectionOptions } from './client';
export { fromKafka, type FromKafkaOptions } from './source';
export { deadLetterHeaders, toKafka, type ToKafkaOptions } from './sink';
