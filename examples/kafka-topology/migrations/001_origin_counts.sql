-- Counts that replays cannot inflate (applied by the store stage after the booking
-- migrations, with its own ledger).
--
-- A record's identity is fixed where it first enters Kafka: its position in the raw topic
-- (`topic/partition/offset`) and that message's timestamp. Normalization copies both into
-- headers of what it writes (`tributary-origin-position`, `tributary-origin-time`), so a record
-- normalized again after a crash keeps them, whatever new offset its copy gets in the clean
-- or dead topic. Storage writes them as `origin_position` and `origin_time`.
ALTER TABLE bookings
    ADD COLUMN IF NOT EXISTS origin_position String DEFAULT '',
    ADD COLUMN IF NOT EXISTS origin_time DateTime64(3, 'UTC') DEFAULT ingested_at;

ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS origin_position String DEFAULT '',
    ADD COLUMN IF NOT EXISTS origin_time DateTime64(3, 'UTC') DEFAULT failed_at;

-- Accepted and dead-lettered records per vendor and hour of arrival, each as the set of the
-- records' identities: a copy inserted again adds an identity already in the set, so the
-- counts are exact after any number of replays, with no FINAL and whatever parts have
-- merged. The hour is the origin's, which a copy shares. A row with no origin position (written by
-- another pipeline) counts as a record of its own, as vendor_quality_hourly counts it.
CREATE TABLE IF NOT EXISTS vendor_quality_origins
(
    vendor        LowCardinality(String),
    hour          DateTime('UTC'),
    accepted      AggregateFunction(uniqExact, String),
    dead_lettered AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (vendor, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS vendor_quality_origins_accepted_mv TO vendor_quality_origins AS
SELECT vendor, toStartOfHour(origin_time) AS hour,
       uniqExactState(if(origin_position = '', toString(generateUUIDv4()), origin_position)) AS accepted,
       uniqExactStateIf(origin_position, 0) AS dead_lettered
FROM bookings
GROUP BY vendor, hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS vendor_quality_origins_dead_lettered_mv TO vendor_quality_origins AS
SELECT vendor, toStartOfHour(origin_time) AS hour,
       uniqExactStateIf(origin_position, 0) AS accepted,
       uniqExactState(if(origin_position = '', toString(generateUUIDv4()), origin_position)) AS dead_lettered
FROM dead_letters
GROUP BY vendor, hour;

CREATE VIEW IF NOT EXISTS vendor_quality_exact AS
SELECT vendor, hour, uniqExactMerge(accepted) AS accepted, uniqExactMerge(dead_lettered) AS dead_lettered
FROM vendor_quality_origins
GROUP BY vendor, hour;
