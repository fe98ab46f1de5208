-- Compliance (docs/compliance.md): who the booking belongs to, the traveller details
-- sealed under that customer's own key, the keys themselves, the audit log, and how
-- long refused payloads are kept.
--
-- customer_token names the data subject (a pseudonym when encrypt pseudonymizes);
-- travellers_sealed is the travellers array encrypted under the subject's key. Erasure
-- shreds the key and empties both, so the booking still counts in every figure. Sealed
-- traveller details themselves are kept 3 years after booking, then emptied by the TTL.
ALTER TABLE bookings
    ADD COLUMN IF NOT EXISTS customer_token String DEFAULT '',
    ADD COLUMN IF NOT EXISTS travellers_sealed String DEFAULT '' TTL toDateTime(booked_at) + INTERVAL 3 YEAR;

-- One row per data key of a data subject, wrapped by the keyring's master key. Erasure
-- deletes a subject's rows with a mutation that rewrites the parts.
CREATE TABLE IF NOT EXISTS subject_keys
(
    subject        String,
    key_id         String,
    master_key_id  String,
    wrapped        String,
    created_ms     UInt64
)
ENGINE = MergeTree
ORDER BY (subject, key_id);

-- Security events, append-only: nothing in tributary updates or deletes these rows.
CREATE TABLE IF NOT EXISTS audit_log
(
    id       String,
    at       DateTime64(3, 'UTC'),
    type     LowCardinality(String),
    actor    String,
    purpose  String,
    target   String,
    outcome  LowCardinality(String),
    details  String
)
ENGINE = MergeTree
ORDER BY (at, id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Refused payloads may hold personal data that no subject key protects: keep them 30 days.
ALTER TABLE dead_letters MODIFY TTL toDateTime(failed_at) + INTERVAL 30 DAY;
