-- Who may do what, and who labelled. Run by the schema's owner (the migration role, e.g.
-- `fraud-cases migrate` or the sink with FRAUD_POSTGRES__MIGRATION_DSN), never by the runtime.
--
-- Two group roles (created here when missing, which needs CREATEROLE once; a DBA may create
-- them beforehand instead) that login roles are granted into:
--   fraud_case_writer: the case-store sink. Writes cases, applies labels through the functions
--                      below, INSERTs into audit. No DDL, no UPDATE/DELETE on audit, no way
--                      to write a label's author.
--   fraud_analyst:     people. Read cases and the training view; record labels only through
--                      record_label(), which takes the author from the login, not from input.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fraud_case_writer') THEN
        CREATE ROLE fraud_case_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fraud_analyst') THEN
        CREATE ROLE fraud_analyst NOLOGIN;
    END IF;
END $$;

-- labelled_by is now the authenticated database role that recorded the label (session_user);
-- what a relayed message says about its author is kept beside it, as a claim.
ALTER TABLE cases ADD COLUMN label_claimed_by text;
ALTER TABLE pending_labels ADD COLUMN claimed_by text;

-- Record one verdict. Returns 'applied' (the case carries it now), 'same' (it already did) or
-- 'pending' (no case yet: applied when it is written). SECURITY DEFINER: callers need no right
-- on the label columns, pending_labels or audit beyond EXECUTE.
CREATE FUNCTION record_label(p_tx text, p_fraud boolean, p_at timestamptz,
                             p_claimed_by text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    who text := session_user;
    verdict smallint := p_fraud::int;
    c record;
BEGIN
    UPDATE cases
       SET label = verdict, labelled_by = who, labelled_at = p_at, label_claimed_by = p_claimed_by
     WHERE transaction_id = p_tx
       AND (label, labelled_by, labelled_at, label_claimed_by)
           IS DISTINCT FROM (verdict, who, p_at, p_claimed_by)
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
    VALUES (p_tx, verdict, who, p_at, p_claimed_by)
    ON CONFLICT (transaction_id) DO UPDATE SET
        label = EXCLUDED.label, labelled_by = EXCLUDED.labelled_by,
        labelled_at = EXCLUDED.labelled_at, claimed_by = EXCLUDED.claimed_by;
    RETURN 'pending';
END $$;

-- Labels that arrived before their case, applied once the case is written (by the sink, in
-- the same transaction as the write); returns how many.
CREATE FUNCTION apply_pending_labels(p_ids text[])
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    n integer;
BEGIN
    WITH applied AS (
        DELETE FROM pending_labels p WHERE p.transaction_id = ANY (p_ids) RETURNING p.*
    ), updated AS (
        UPDATE cases c
           SET label = a.label, labelled_by = a.labelled_by, labelled_at = a.labelled_at,
               label_claimed_by = a.claimed_by
          FROM applied a
         WHERE c.transaction_id = a.transaction_id
        RETURNING c.transaction_id, c.label, c.labelled_by, c.label_claimed_by, c.detector,
                  c.model_version, c.rules_version
    )
    INSERT INTO audit (kind, subject, detector, model_version, rules_version, detail)
    SELECT 'label', transaction_id, detector, model_version, rules_version,
           jsonb_strip_nulls(jsonb_build_object(
               'is_fraud', label = 1, 'by', labelled_by, 'claimed_by', label_claimed_by))
      FROM updated;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

REVOKE ALL ON cases, audit, pending_labels, schema_migrations, training_examples FROM PUBLIC;
REVOKE ALL ON FUNCTION record_label(text, boolean, timestamptz, text),
                       apply_pending_labels(text[]) FROM PUBLIC;

-- The sink: upserts decisions (the label columns are not among those it may update).
GRANT SELECT, INSERT ON cases TO fraud_case_writer;
GRANT UPDATE (action, score, reasons, model_version, rules_version, scored_at, transaction)
    ON cases TO fraud_case_writer;
GRANT INSERT ON audit TO fraud_case_writer;
-- ON CONFLICT DO NOTHING (a redelivered decision is audited once) reads its arbiter's columns.
GRANT SELECT (kind, subject, detector) ON audit TO fraud_case_writer;
GRANT USAGE ON SEQUENCE audit_id_seq TO fraud_case_writer;
GRANT SELECT ON schema_migrations TO fraud_case_writer;
GRANT EXECUTE ON FUNCTION record_label(text, boolean, timestamptz, text),
                          apply_pending_labels(text[]) TO fraud_case_writer;

-- People: read, and label as themselves.
GRANT SELECT ON cases, training_examples TO fraud_analyst;
GRANT EXECUTE ON FUNCTION record_label(text, boolean, timestamptz, text) TO fraud_analyst;
