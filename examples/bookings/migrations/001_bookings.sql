-- One row per booking and vendor; a later version of the same booking replaces an
-- earlier one at merge time (query with FINAL for the current state). The
-- deduplication window makes a retried insert with the same token a no-op.
CREATE TABLE IF NOT EXISTS bookings
(
    vendor         LowCardinality(String),
    booking_id     String,
    updated_at     DateTime64(3, 'UTC'),
    status         LowCardinality(String),
    product        LowCardinality(String),
    booked_at      DateTime64(3, 'UTC'),
    travel_date    Date,
    origin         String,
    destination    String,
    passengers     UInt16,
    total_amount   Decimal(18, 4),
    currency       LowCardinality(String),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (vendor, booking_id)
SETTINGS non_replicated_deduplication_window = 10000;
