-- The analyst console (docs/console.md): verdicts richer than fraud/legit, a note, a case's
-- status and assignee, who in the console did what, an outbox for the labels topic, and the
-- indexes its queue reads through.

ALTER TABLE cases
    ADD COLUMN IF NOT EXISTS verdict text
        CHECK (verdict IN ('fraud', 'legitimate', 'friendly_fraud')),
    ADD COLUMN IF NOT EXISTS label_note text CHECK (length(label_note) <= 2000),
    ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'in_review', 'closed')),
    ADD COLUMN IF NOT EXISTS assignee text,
    -- The person the console authenticated (its OIDC proxy or its own login); labelled_by
    -- stays the database login that wrote the label (the console's own).
    ADD COLUMN IF NOT EXISTS analyst text;

ALTER TABLE audit DROP CONSTRAINT IF EXISTS audit_kind_check;
ALTER TABLE audit ADD CONSTRAINT audit_kind_check
    CHECK (kind IN ('decision', 'label', 'rollout', 'serving', 'assign', 'status'));

-- The queue: alerts nobody labelled yet, newest first, keyset-paginated on (scored_at, id).
CREATE INDEX IF NOT EXISTS cases_queue ON cases (scored_at DESC, transaction_id DESC)
    WHERE action <> 'allow' AND label IS NULL;
CREATE INDEX IF NOT EXISTS cases_queue_score ON cases (score DESC, transaction_id DESC)
    WHERE action <> 'allow' AND label IS NULL;
CREATE INDEX IF NOT EXISTS cases_queue_reasons ON cases USING gin (reasons)
    WHERE action <> 'allow' AND label IS NULL;
-- A case's page: cases linked by merchant or device.
CREATE INDEX IF NOT EXISTS cases_merchant_time
    ON cases ((transaction ->> 'merchant'), scored_at DESC);
CREATE INDEX IF NOT EXISTS cases_device_time
    ON cases ((transaction ->> 'device_id'), scored_at DESC);

-- Labels the console recorded, waiting to be published to the labels topic (training and the
-- label-feedback features read it): written in the label's own transaction, deleted once the
-- broker has it, so a label is never recorded without being published eventually.
CREATE TABLE IF NOT EXISTS label_outbox (
    id              bigserial PRIMARY KEY,
    transaction_id  text NOT NULL,
    body            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One verdict from the console: the label (1 for fraud and friendly fraud), the verdict, the
-- note, the analyst, the case closed, an audit row and an outbox row, in one transaction.
-- Returns the label's time (what the labels topic carries), or NULL when there is no such case.
CREATE FUNCTION console_label(p_tx text, p_verdict text, p_note text, p_analyst text)
RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    who text := session_user;
    v_at timestamptz := clock_timestamp();
    c record;
BEGIN
    UPDATE cases
       SET label = (p_verdict <> 'legitimate')::int, verdict = p_verdict,
           label_note = NULLIF(p_note, ''), labelled_by = who, labelled_at = v_at,
           label_claimed_by = NULL, analyst = p_analyst, status = 'closed'
     WHERE transaction_id = p_tx
    RETURNING detector, model_version, rules_version, transaction INTO c;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO audit (kind, subject, detector, model_version, rules_version, detail)
    VALUES ('label', p_tx, c.detector, c.model_version, c.rules_version,
            jsonb_strip_nulls(jsonb_build_object(
                'is_fraud', p_verdict <> 'legitimate', 'verdict', p_verdict, 'by', who,
                'analyst', p_analyst, 'via', 'console', 'note', NULLIF(p_note, ''))));
    INSERT INTO label_outbox (transaction_id, body)
    VALUES (p_tx, jsonb_strip_nulls(jsonb_build_object(
        'transaction_id', p_tx, 'is_fraud', p_verdict <> 'legitimate', 'verdict', p_verdict,
        'by', p_analyst, 'at', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'transaction', c.transaction)));
    RETURN v_at;
END $$;

-- Assign cases (NULL: unassign); an open case goes in review. Returns how many changed.
CREATE FUNCTION console_assign(p_txs text[], p_assignee text, p_analyst text)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    n integer;
BEGIN
    WITH changed AS (
        UPDATE cases
           SET assignee = p_assignee,
               status = CASE WHEN status = 'open' AND p_assignee IS NOT NULL
                             THEN 'in_review' ELSE status END
         WHERE transaction_id = ANY (p_txs) AND assignee IS DISTINCT FROM p_assignee
        RETURNING transaction_id, detector, model_version, rules_version
    )
    INSERT INTO audit (kind, subject, detector, model_version, rules_version, detail)
    SELECT 'assign', transaction_id, detector, model_version, rules_version,
           jsonb_strip_nulls(jsonb_build_object(
               'assignee', p_assignee, 'by', session_user, 'analyst', p_analyst))
      FROM changed;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

CREATE FUNCTION console_set_status(p_tx text, p_status text, p_analyst text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    c record;
BEGIN
    UPDATE cases SET status = p_status
     WHERE transaction_id = p_tx AND status IS DISTINCT FROM p_status
    RETURNING detector, model_version, rules_version INTO c;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO audit (kind, subject, detector, model_version, rules_version, detail)
    VALUES ('status', p_tx, c.detector, c.model_version, c.rules_version,
            jsonb_build_object('status', p_status, 'by', session_user, 'analyst', p_analyst));
    RETURN true;
END $$;

-- The console's own label comes back from the labels topic through the case-store sink: the
-- same verdict at the same instant by the same analyst is the same label, not a new one.
CREATE OR REPLACE FUNCTION record_label(p_tx text, p_fraud boolean, p_at timestamptz,
                                        p_claimed_by text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    who text := session_user;
    v_label smallint := p_fraud::int;  -- not `verdict`: cases has a column of that name now
    c record;
BEGIN
    IF EXISTS (SELECT 1 FROM cases
                WHERE transaction_id = p_tx AND label = v_label AND labelled_at = p_at
                  AND analyst IS NOT DISTINCT FROM p_claimed_by AND analyst IS NOT NULL) THEN
        RETURN 'same';
    END IF;
    UPDATE cases
       SET label = v_label, labelled_by = who, labelled_at = p_at, label_claimed_by = p_claimed_by,
           verdict = CASE WHEN p_fraud THEN 'fraud' ELSE 'legitimate' END, status = 'closed'
     WHERE transaction_id = p_tx
       AND (label, labelled_by, labelled_at, label_claimed_by)
           IS DISTINCT FROM (v_label, who, p_at, p_claimed_by)
    RETURNING detector, model_version, rules_version INTO c;
    IF FOUND THEN
        INSERT INTO audit (kind, subject, detector, model_version, rules_version, detail)
        VALUES ('label', p_tx, c.detector, c.model_version, c.rules_version,
                jsonb_strip_nulls(jsonb_build_object(
                    'is_fraud', p_fraud, 'by', who, 'claimed_by', p_claimed_by)));
        RETURN 'applied';
    END IF;
    IF EXISTS (SELECT 1 FROM cases WHERE transaction_id = p_tx) THEN
        RETURN 'same';  -- a redelivered label: audited once
    END IF;
    INSERT INTO pending_labels (transaction_id, label, labelled_by, labelled_at, claimed_by)
    VALUES (p_tx, v_label, who, p_at, p_claimed_by)
    ON CONFLICT (transaction_id) DO UPDATE SET
        label = EXCLUDED.label, labelled_by = EXCLUDED.labelled_by,
        labelled_at = EXCLUDED.labelled_at, claimed_by = EXCLUDED.claimed_by;
    RETURN 'pending';
END $$;

-- The console: reads cases and the audit trail; writes only through the functions above and
-- the outbox it drains.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fraud_console') THEN
        CREATE ROLE fraud_console NOLOGIN;
    END IF;
END $$;
GRANT SELECT ON cases, audit TO fraud_console;
GRANT SELECT, UPDATE, DELETE ON label_outbox TO fraud_console;  -- FOR UPDATE needs UPDATE
GRANT EXECUTE ON FUNCTION console_label(text, text, text, text),
                          console_assign(text[], text, text),
                          console_set_status(text, text, text) TO fraud_console;
REVOKE EXECUTE ON FUNCTION console_label(text, text, text, text),
                           console_assign(text[], text, text),
                           console_set_status(text, text, text) FROM PUBLIC;
