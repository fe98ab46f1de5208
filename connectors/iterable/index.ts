export { fromIterable, type FromIterableOptions } from './source';
