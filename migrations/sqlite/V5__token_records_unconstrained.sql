-- Token records without the foreign key to identities and without the by-identity index, as
-- on PostgreSQL (same version in ../postgres/). A token issue inserts its record only where
-- its identity is live, checked by the inserting statement itself inside the batch's write
-- transaction (`insert_tokens` in src/store/sqlite.rs), so the key re-checked what that
-- statement had established; and its cascade, the one reader of the index, never fires:
-- identities are tombstoned, not deleted, and deleting a tenant deletes its token records
-- first. Every commit appends a copy of each page it touched to the WAL, and the index's
-- pages, about one per identity in a batch, were a large share of them.
--
-- SQLite cannot drop a constraint, so the table is rebuilt: on a large database this
-- migration copies every token record once.
CREATE TABLE issued_tokens_v5 (
    tenant_id   BLOB NOT NULL,
    jti         BLOB NOT NULL,
    identity_id BLOB NOT NULL,
    scopes      TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, jti)
) WITHOUT ROWID;
INSERT INTO issued_tokens_v5 (tenant_id, jti, identity_id, scopes, issued_at, expires_at)
    SELECT tenant_id, jti, identity_id, scopes, issued_at, expires_at FROM issued_tokens;
DROP TABLE issued_tokens;
ALTER TABLE issued_tokens_v5 RENAME TO issued_tokens;
