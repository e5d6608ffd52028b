-- When each verdict became known, for training's point-in-time label features
-- (docs/features.md): `fraud-train fit postgresql://... --table training_examples` counts a
-- verdict only from its labelled_at on.
CREATE OR REPLACE VIEW training_examples AS
SELECT
    transaction_id,
    user_id,
    (transaction ->> 'amount')::double precision AS amount,
    transaction ->> 'currency'          AS currency,
    transaction ->> 'timestamp'         AS timestamp,
    transaction ->> 'merchant'          AS merchant,
    transaction ->> 'merchant_category' AS merchant_category,
    transaction ->> 'channel'           AS channel,
    transaction ->> 'location'          AS location,
    transaction ->> 'device_id'         AS device_id,
    (transaction ->> 'lat')::double precision AS lat,
    (transaction ->> 'lon')::double precision AS lon,
    label,
    labelled_at
FROM cases
WHERE label IS NOT NULL AND transaction IS NOT NULL;
