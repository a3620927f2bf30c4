-- TOTP second factor of staff accounts (compliance/identity/totp.py, docs/security.md "Second factor").
-- One credential per account: pending from enrolment until confirmed_at is set by a first correct code.
-- The RFC 6238 secret is sealed with AES-256-GCM under the root key (YIYANG_ROOT_KEY), the account id bound
-- in as associated data, so neither a dump nor a sealed secret copied onto another account yields codes.
-- last_used_step is the highest time step (unix time / 30 s) ever accepted: a code is accepted only for a
-- later step, by a conditional UPDATE, so no code is ever accepted twice (replay), even concurrently.
CREATE TABLE shared.totp_credential (
    account_id bigint PRIMARY KEY REFERENCES shared.user_account (id) ON DELETE CASCADE,
    secret_sealed bytea NOT NULL CHECK (octet_length(secret_sealed) > 29),
    created_at timestamptz NOT NULL,
    confirmed_at timestamptz,
    last_used_step bigint CHECK (last_used_step IS NULL OR last_used_step >= 0)
);

-- An institution can require a second factor of its admin and clinical staff (institution_admin,
-- head_nurse, nurse, doctor); who enrols is decided in totp.py.
ALTER TABLE shared.institution ADD COLUMN requires_totp boolean NOT NULL DEFAULT false;
