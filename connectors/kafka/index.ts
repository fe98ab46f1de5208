export { type KafkaConnectionOptions } from './client';
export { fromKafka, type FromKafkaOptions } from './source';
export { deadLetterHeaders, messageValue, toKafka, type ToKafkaOptions } from './sink';
