-- Field-level encryption, the middle of the key hierarchy (compliance/encryption/, docs/security.md
-- "Field-level encryption"): root key (environment, never stored) → tenant key (here, one row per
-- version) → data key per data subject (tenant schemas, table data_key).
-- wrapped_key: the tenant key (16 or 32 bytes, by algorithm) followed by the tenant's 32-byte blind-index
-- secret, sealed with AES-256-GCM under the root key named by root_key_id (a fingerprint, not the key), the
-- institution, version and algorithm bound in as associated data. The highest version not retired wraps new
-- data keys; older versions open data keys until a rotation has re-wrapped them, then they are retired and
-- their wrapped key erased (NULL).
CREATE TABLE shared.tenant_key (
    institution_id bigint NOT NULL REFERENCES shared.institution (id) ON DELETE CASCADE,
    version integer NOT NULL CHECK (version >= 1),
    algorithm varchar(16) NOT NULL CHECK (algorithm IN ('aes-256-gcm', 'sm4-gcm')),
    wrapped_key bytea CHECK (wrapped_key IS NULL OR octet_length(wrapped_key) > 34),
    root_key_id varchar(16) CHECK (root_key_id ~ '^[0-9a-f]{16}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    rewrapped_at timestamptz,
    retired_at timestamptz,
    PRIMARY KEY (institution_id, version),
    CHECK ((retired_at IS NULL) = (wrapped_key IS NOT NULL)),
    CHECK ((wrapped_key IS NULL) = (root_key_id IS NULL))
);
-- A root-key rotation looks for the rows not yet wrapped by the new root key.
CREATE INDEX tenant_key_root_key_idx ON shared.tenant_key (root_key_id) WHERE wrapped_key IS NOT NULL;
