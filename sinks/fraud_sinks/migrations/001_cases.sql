-- Cases: one row per decided transaction (idempotent on transaction_id), with the analyst's
-- label once there is one. Indexes serve the investigator's queries: by user, by time, by action.
CREATE TABLE cases (
    transaction_id  text PRIMARY KEY,
    user_id         text NOT NULL,
    detector        text NOT NULL,
    track           text NOT NULL,
    action          text NOT NULL CHECK (action IN ('allow', 'review', 'block')),
    score           double precision NOT NULL,
    reasons         text[] NOT NULL DEFAULT '{}',
    model_version   text NOT NULL,
    rules_version   text NOT NULL,
    event_time      timestamptz NOT NULL,
    scored_at       timestamptz NOT NULL,
    transaction     jsonb,
    label           smallint CHECK (label IN (0, 1)),
    labelled_by     text,
    labelled_at     timestamptz
);
CREATE INDEX cases_user_time ON cases (user_id, event_time DESC);
CREATE INDEX cases_scored_at ON cases (scored_at DESC);
CREATE INDEX cases_open ON cases (action, scored_at DESC) WHERE action <> 'allow' AND label IS NULL;

-- Append-only audit trail (PCI DSS 10): every decision, label and rollout event, once.
CREATE TABLE audit (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    kind            text NOT NULL CHECK (kind IN ('decision', 'label', 'rollout')),
    subject         text NOT NULL,
    detector        text,
    model_version   text,
    rules_version   text,
    detail          jsonb NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX audit_decision_once ON audit (subject) WHERE kind = 'decision';
CREATE INDEX audit_at ON audit (at DESC);

CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only: % is not allowed', TG_OP;
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();

-- Labelled cases in the transaction contract's columns: `fraud-train fit postgresql://...
-- --table training_examples` trains on analysts' verdicts (closing the feedback loop).
CREATE VIEW training_examples AS
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
    label
FROM cases
WHERE label IS NOT NULL AND transaction IS NOT NULL;
