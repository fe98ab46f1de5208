-- What analysts ask first, ready to query.
--
-- Booking figures read bookings FINAL, so a booking counts once in its latest version
-- (a re-sent or updated booking does not count twice): plain views, exact at query time.
CREATE VIEW IF NOT EXISTS bookings_per_vendor_day AS
SELECT vendor, toDate(booked_at) AS day, currency,
       count() AS bookings,
       countIf(status = 'cancelled') AS cancelled,
       sumIf(total_amount, status != 'cancelled') AS revenue
FROM bookings FINAL
GROUP BY vendor, day, currency;

CREATE VIEW IF NOT EXISTS cancellation_rate_per_vendor AS
SELECT vendor, count() AS bookings, countIf(status = 'cancelled') AS cancelled,
       round(cancelled / bookings, 4) AS cancellation_rate
FROM bookings FINAL
GROUP BY vendor;

-- Vendor data quality counts records as they arrive: accepted (written to bookings) and
-- dead-lettered, per vendor and hour. Materialized views keep it cheap to read; a batch
-- absorbed by its insert token is not counted again.
CREATE TABLE IF NOT EXISTS vendor_quality_hourly
(
    vendor        LowCardinality(String),
    hour          DateTime('UTC'),
    accepted      UInt64,
    dead_lettered UInt64
)
ENGINE = SummingMergeTree
ORDER BY (vendor, hour)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS vendor_quality_accepted_mv TO vendor_quality_hourly AS
SELECT vendor, toStartOfHour(ingested_at) AS hour, count() AS accepted, toUInt64(0) AS dead_lettered
FROM bookings
GROUP BY vendor, hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS vendor_quality_dead_lettered_mv TO vendor_quality_hourly AS
SELECT vendor, toStartOfHour(failed_at) AS hour, toUInt64(0) AS accepted, count() AS dead_lettered
FROM dead_letters
GROUP BY vendor, hour;
