-- Data keys of field-level encryption (compliance/encryption/, docs/security.md "Field-level encryption").
-- Runs with search_path set to the tenant schema.
-- One key per data subject (today a resident: subject_id is a resident id; a family member's fields are
-- encrypted under their resident's key) and version, sealed under the tenant key version
-- tenant_key_version (shared.tenant_key), the institution, subject, version and algorithm bound in as
-- associated data. No foreign key to resident: the key is erased on purpose (crypto-shredding sets
-- wrapped_key to NULL and destroyed_at), never by a cascade, and the row stays to say so.
CREATE TABLE data_key (
    subject_id bigint NOT NULL,
    version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    algorithm varchar(16) NOT NULL CHECK (algorithm IN ('aes-256-gcm', 'sm4-gcm')),
    tenant_key_version integer NOT NULL CHECK (tenant_key_version >= 1),
    wrapped_key bytea CHECK (wrapped_key IS NULL OR octet_length(wrapped_key) > 34),
    created_at timestamptz NOT NULL DEFAULT now(),
    rewrapped_at timestamptz,
    destroyed_at timestamptz,
    PRIMARY KEY (subject_id, version),
    CHECK ((destroyed_at IS NULL) = (wrapped_key IS NOT NULL))
);
-- A tenant-key rotation looks for the keys still wrapped by an older tenant-key version.
CREATE INDEX data_key_tenant_key_version_idx ON data_key (tenant_key_version) WHERE wrapped_key IS NOT NULL;
