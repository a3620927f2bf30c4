-- The audit log of the tenant (compliance/audit/, docs/security.md "Audit log"): one row per read or write
-- of resident data, written in the unit of work of the work it records. Append-only: the trigger below
-- refuses UPDATE, DELETE and TRUNCATE. Hash-chained: `hash` is SHA-256 over the canonical encoding of the
-- row's columns, the institution and `prev_hash` (compliance/audit/chain.py); the first row's prev_hash is
-- 32 zero bytes. `seq` is gapless: appends take a per-tenant transaction-level advisory lock and number
-- after the last row, so there is no chain-head row to update. No health data: categories are names.
CREATE TABLE audit_event (
    seq bigint PRIMARY KEY CHECK (seq >= 1),
    occurred_at timestamptz NOT NULL,
    principal_subject text NOT NULL CHECK (length(principal_subject) BETWEEN 1 AND 200),
    principal_kind text NOT NULL CHECK (length(principal_kind) BETWEEN 1 AND 40),
    roles text[] NOT NULL,
    client_id text CHECK (length(client_id) <= 200),
    action text NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    resident_id bigint,
    data_categories text[] NOT NULL,
    purpose text CHECK (length(purpose) <= 100),
    outcome text NOT NULL CHECK (outcome IN ('permitted', 'denied', 'failed')),
    reason_code text CHECK (length(reason_code) <= 100),
    request_id text CHECK (length(request_id) <= 200),
    client_ip text CHECK (length(client_ip) <= 100),
    prev_hash bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    CHECK ((outcome = 'permitted') = (reason_code IS NULL))
);
-- The access report (who saw a resident's data): by resident, newest first.
CREATE INDEX audit_event_resident_idx ON audit_event (resident_id, seq) WHERE resident_id IS NOT NULL;

CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_event_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only();
