export { fromFiles, type FromFilesOptions, type FileFormat } from './source';
