-- Signed checkpoints of the tenants' audit chains (compliance/audit/checkpoints.py), outside the tenant
-- schemas: whoever rewrites a tenant's audit_event and recomputes its chain still does not match the
-- (seq, hash) signed here. The Ed25519 private key is sealed (AES-256-GCM) under the root key of the
-- environment (YIYANG_ROOT_KEY), its key id bound in as associated data; created on first use.
CREATE TABLE shared.audit_signing_key (
    key_id varchar(32) PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{32}$'),
    public_key bytea NOT NULL CHECK (octet_length(public_key) = 32),
    private_key_sealed bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to shared.institution: a checkpoint outlives nothing it could cascade from, and the
-- table is append-only like the log it vouches for.
CREATE TABLE shared.audit_checkpoint (
    institution_id bigint NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 1),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    signature bytea NOT NULL CHECK (octet_length(signature) = 64),
    key_id varchar(32) NOT NULL REFERENCES shared.audit_signing_key (key_id),
    signed_at timestamptz NOT NULL,
    PRIMARY KEY (institution_id, seq)
);

CREATE FUNCTION shared.audit_checkpoint_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_checkpoint_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON shared.audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION shared.audit_checkpoint_append_only();
CREATE TRIGGER audit_signing_key_append_only
    BEFORE DELETE OR TRUNCATE ON shared.audit_signing_key
    FOR EACH STATEMENT EXECUTE FUNCTION shared.audit_checkpoint_append_only();
-- A root-key rotation re-seals the private key (compliance/audit/checkpoints.py `reseal_audit_keys`):
-- that column alone may change.
CREATE FUNCTION shared.audit_signing_key_reseal_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.key_id, NEW.public_key, NEW.created_at) IS DISTINCT FROM (OLD.key_id, OLD.public_key, OLD.created_at)
    THEN
        RAISE EXCEPTION 'audit_signing_key is append-only: only a re-seal may update it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_signing_key_reseal_only
    BEFORE UPDATE ON shared.audit_signing_key
    FOR EACH ROW EXECUTE FUNCTION shared.audit_signing_key_reseal_only();
