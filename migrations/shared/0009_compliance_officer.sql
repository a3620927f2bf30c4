-- The compliance officer (个人信息保护负责人, PIPL art. 52): reads the institution's audit log and residents'
-- access reports (compliance/audit/report.py), nothing of the care record beyond a resident's identity.
-- The role column's CHECK of 0003_accounts.sql was declared inline, so PostgreSQL named it
-- staff_membership_role_check; it is replaced under the same name with the new role added.
ALTER TABLE shared.staff_membership DROP CONSTRAINT staff_membership_role_check;
ALTER TABLE shared.staff_membership ADD CONSTRAINT staff_membership_role_check CHECK (role IN (
    'institution_admin', 'head_nurse', 'nurse', 'doctor', 'caregiver', 'butler', 'sales', 'finance',
    'logistics', 'compliance_officer'
));
