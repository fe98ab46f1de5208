-- Which insert wrote each row: the pipeline's insert token of its batch. ClickHouse writes
-- a table's part and the part of each materialized view it feeds one after the other, so a
-- storage stage killed in between leaves the views short of rows the table holds. A batch
-- read again after such a crash finds its own rows by this token and inserts them again
-- with it: the table drops the block as a copy, and each view takes the part it missed
-- (see oncePerOrigin in store.ts). A row of another insert is a copy, and is not written.
ALTER TABLE bookings
    ADD COLUMN IF NOT EXISTS insert_token String DEFAULT '';

ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS insert_token String DEFAULT '';
