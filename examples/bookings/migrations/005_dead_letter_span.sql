-- How long the whole refused payload was, and its SHA-256: `raw` may hold only its head.
ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS raw_bytes UInt64 DEFAULT 0 AFTER raw_encoding,
    ADD COLUMN IF NOT EXISTS raw_sha256 String DEFAULT '' AFTER raw_bytes;
