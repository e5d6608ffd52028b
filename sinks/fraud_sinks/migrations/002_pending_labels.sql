-- Labels can arrive before their case (the labels topic and the decisions topic are consumed
-- independently, and an analyst may label from another system): they wait here and are applied
-- when the case is written, so no verdict is ever dropped.
CREATE TABLE pending_labels (
    transaction_id  text PRIMARY KEY,
    label           smallint NOT NULL CHECK (label IN (0, 1)),
    labelled_by     text NOT NULL,
    labelled_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);

-- What actually decided, for the audit trail: the first decision seen from each
-- (detector, track, model version, rules version) is recorded once as a 'serving' event.
ALTER TABLE audit DROP CONSTRAINT audit_kind_check;
ALTER TABLE audit ADD CONSTRAINT audit_kind_check
    CHECK (kind IN ('decision', 'label', 'rollout', 'serving'));
CREATE UNIQUE INDEX audit_serving_once ON audit (detector, subject) WHERE kind = 'serving';
