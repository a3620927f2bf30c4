-- The health record's entries sealed as one document per row (care/health_record.py): a page of residents
-- opens one ciphertext per diagnosis, medication or allergy instead of one per column (a medication had
-- five), which halves what encryption costs the page (docs/benchmarks.md, "The 50-resident page").
-- Expand only: rows written before keep their sealed columns and are still read; every new or corrected
-- entry is written as `details` with those columns null. Each row is one or the other.
ALTER TABLE diagnosis ADD COLUMN details bytea, ALTER COLUMN condition DROP NOT NULL;
ALTER TABLE diagnosis ADD CONSTRAINT diagnosis_sealed_once CHECK ((details IS NULL) <> (condition IS NULL));

ALTER TABLE medication
    ADD COLUMN details bytea,
    ALTER COLUMN drug DROP NOT NULL,
    ALTER COLUMN dose DROP NOT NULL,
    ALTER COLUMN route DROP NOT NULL,
    ALTER COLUMN frequency DROP NOT NULL;
ALTER TABLE medication ADD CONSTRAINT medication_sealed_once CHECK ((details IS NULL) <> (drug IS NULL));

ALTER TABLE allergy
    ADD COLUMN details bytea,
    ALTER COLUMN substance DROP NOT NULL,
    ALTER COLUMN severity DROP NOT NULL;
ALTER TABLE allergy ADD CONSTRAINT allergy_sealed_once CHECK ((details IS NULL) <> (substance IS NULL));
