-- Keys that sign access tokens (compliance/identity/keys.py). A key is published (JWKS) from
-- created_at, signs from activated_at, and stays published until retired_at, which rotation sets to
-- when the last token it may have signed has expired. The private key is sealed with AES-256-GCM under
-- the root key of the environment (YIYANG_ROOT_KEY), its kid bound in as associated data.
CREATE TABLE shared.signing_key (
    kid varchar(64) PRIMARY KEY,
    algorithm varchar(16) NOT NULL CHECK (algorithm = 'ES256'),
    public_jwk jsonb NOT NULL CHECK (jsonb_typeof(public_jwk) = 'object' AND NOT public_jwk ? 'd'),
    private_key_sealed bytea NOT NULL,
    created_at timestamptz NOT NULL,
    activated_at timestamptz NOT NULL CHECK (activated_at >= created_at),
    retired_at timestamptz CHECK (retired_at IS NULL OR retired_at > activated_at)
);
-- No index: the table holds a handful of rows (the keys of the last rotations).
