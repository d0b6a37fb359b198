-- Token records cost less to write: a token issue inserts its record in the same statement
-- that locks and updates its live identity row (see `record_tokens_ctes!` in
-- src/store/postgres.rs), so the foreign key to identities only re-checked, row by row through
-- a trigger, what that statement had just established; and its cascade, the one reader of the
-- by-identity index, never fires: identities are tombstoned, not deleted, and deleting a
-- tenant deletes its token records before its identities. Together they were about a sixth
-- of PostgreSQL's work per issued token. SQLite drops both too (same version in ../sqlite/).
ALTER TABLE issued_tokens DROP CONSTRAINT issued_tokens_tenant_id_identity_id_fkey;
DROP INDEX issued_tokens_by_identity;
