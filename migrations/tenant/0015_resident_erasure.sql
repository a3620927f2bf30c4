-- Tombstones of erased residents (care/data_requests.py): the resident's data key was destroyed
-- (crypto-shredding) and what could still single them out was removed; this row says who erased them,
-- when and why. Nothing personal: a reason code and the request's number in the institution's register.
CREATE TABLE resident_erasure (
    resident_id bigint PRIMARY KEY REFERENCES resident (id),
    erased_at timestamptz NOT NULL DEFAULT now(),
    erased_by varchar(200) NOT NULL,
    reason varchar(40) NOT NULL
        CHECK (reason IN ('data_subject_request', 'guardian_request', 'retention_ended', 'consent_withdrawn')),
    reference varchar(40)
);
