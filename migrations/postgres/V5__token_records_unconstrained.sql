-- Token records cost less to write: a token issue inserts its record in the same statement
-- that locks and updates its live identity row (see `record_tokens_ctes!` in
-- src/store/postgres.rs), so the foreign key to identities only re-checked, row by row through
-- a trigger, what that statement had just established; and its cascade, the one reader of the
-- by-identity index, never fires: identities are tombstoned, not deleted, and deleting a
-- tenant deletes its token records before its identities. Together they were a sixth of
-- PostgreSQL's work per issued token.
--
-- SQLite keeps both (same version in ../sqlite/): it checks the key with one primary-key
-- lookup, and its cascade would scan every tenant's records for each deleted identity
-- without the index.
ALTER TABLE issued_tokens DROP CONSTRAINT issued_tokens_tenant_id_identity_id_fkey;
DROP INDEX issued_tokens_by_identity;
