-- Identity of residents and family members sealed by field-level encryption (compliance/encryption/,
-- docs/security.md "Field-level encryption" and its table of fields). Runs with search_path set to the
-- tenant schema.
--
-- Existing rows: only demo and test data exist, no production data. The plaintext columns cannot be
-- encrypted in SQL (the keys live in the application), so this migration drops them and empties the two
-- tables first; a development database is refilled with `yiyang seed` on a fresh database (or by admitting
-- again). Keeping the rows with NULL identity would leave residents without a name that every reader would
-- have to special-case; keeping the plaintext would defeat the purpose.
--
-- Every *_enc column holds a ciphertext of the core's format (version, algorithm, data-key version, nonce,
-- GCM ciphertext and tag) sealed under the data key of the resident (subject = resident id; a family member's
-- fields under their resident's key), with associated data (institution id, table, column name as here,
-- row id, subject id): a ciphertext copied to another row, column, subject or tenant does not open.
-- Row ids come from the identity sequence before the row is written (care/residents.py takes nextval, seals,
-- then inserts with the id), so the NOT NULL columns are filled by the INSERT itself.
-- *_bidx columns: 16-byte keyed blind indexes (HMAC per tenant, table and column) for exact lookup.
DELETE FROM family_member;
DELETE FROM resident;

ALTER TABLE resident
    DROP COLUMN name,
    DROP COLUMN gender,
    DROP COLUMN birth_date,
    ADD COLUMN name_enc bytea NOT NULL,
    ADD COLUMN gender_enc bytea NOT NULL,
    ADD COLUMN birth_date_enc bytea NOT NULL,
    ADD COLUMN id_card_number_enc bytea,
    ADD COLUMN id_card_number_bidx bytea CHECK (octet_length(id_card_number_bidx) = 16),
    ADD COLUMN phone_enc bytea,
    ADD COLUMN phone_bidx bytea CHECK (octet_length(phone_bidx) = 16),
    DROP COLUMN discharge_note,
    ADD COLUMN discharge_note_enc bytea,
    ADD CHECK ((id_card_number_enc IS NULL) = (id_card_number_bidx IS NULL)),
    ADD CHECK ((phone_enc IS NULL) = (phone_bidx IS NULL));
-- Not unique: the same person may be admitted again after a discharge (two stays, two rows).
CREATE INDEX resident_id_card_number_bidx_idx ON resident (id_card_number_bidx)
    WHERE id_card_number_bidx IS NOT NULL;
CREATE INDEX resident_phone_bidx_idx ON resident (phone_bidx) WHERE phone_bidx IS NOT NULL;
-- Room and bed are searched on their own (the bed index above leads with building).
CREATE INDEX resident_room_idx ON resident (room, bed);

ALTER TABLE family_member
    DROP COLUMN name,
    DROP COLUMN phone,
    ADD COLUMN name_enc bytea NOT NULL,
    ADD COLUMN phone_enc bytea NOT NULL,
    ADD COLUMN phone_bidx bytea NOT NULL CHECK (octet_length(phone_bidx) = 16);
CREATE INDEX family_member_phone_bidx_idx ON family_member (phone_bidx);
