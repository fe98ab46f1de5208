export { fromFiles, type FromFilesOptions, type FileFormat, type FileProgress } from './source';
export { fromInbox, InboxState, type FromInboxOptions } from './inbox';
export { type CsvOptions } from '../../formats/csv';
export { type XmlOptions } from '../../formats/xml';
export { type FileEncoding } from '../../formats/encoding';
