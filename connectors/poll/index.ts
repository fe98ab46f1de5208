export {
  fromPoll,
  type CursorPagination,
  type FromPollOptions,
  type LinkPagination,
  type OffsetPagination,
  type PagePagination,
  type Pagination,
  type PollSource,
  type PollStats,
  type WatermarkOptions,
} from './source';
export { fileCursorStore, type CursorStore, type PollCursor } from './cursorStore';
