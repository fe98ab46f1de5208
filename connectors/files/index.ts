export { fromFiles, type FromFilesOptions, type FileFormat, type FileProgress } from './source';
export { fromInbox, InboxState, type FromInboxOptions } from './inbox';
export { type CsvOptions } from './csv';
export { type XmlOptions } from './xml';
export { type FileEncoding } from './encoding';
