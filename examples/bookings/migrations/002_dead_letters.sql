-- Records refused on the way in, with why and where. Keyed by source position, so the
-- same bad record read twice is one row after a merge (query with FINAL).
CREATE TABLE IF NOT EXISTS dead_letters
(
    pipeline      LowCardinality(String),
    source        LowCardinality(String),
    position      String,
    vendor        LowCardinality(String),
    stage         LowCardinality(String),
    code          LowCardinality(String),
    message       String,
    path          String,
    raw           String,
    raw_encoding  LowCardinality(String),
    received_at   DateTime64(3, 'UTC'),
    failed_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(failed_at)
ORDER BY (pipeline, source, position)
SETTINGS non_replicated_deduplication_window = 10000;
