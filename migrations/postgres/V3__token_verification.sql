-- Token verification: revocations and deletions as a change log, so every running server can
-- keep the revocation watermarks (and tombstones) it checks on each introspection in memory.
-- SQLite has the same tables under the same version in ../sqlite/.
--
-- V2 is reserved for the audit log.
--
-- Signing keys need no new column: `signing_keys.retired_at` is when a key leaves the JWKS.
-- A rotation sets it on the key it supersedes to the moment every token that key can have
-- signed has expired; until then that key still verifies (and is published) but no longer
-- signs. The key that signs is the newest one with no `retired_at`.

-- The sequence number of the last change written. A revoke or delete increments it in the
-- same transaction as its change row; the row lock this takes makes such transactions commit
-- in sequence order, so a reader that sees change N has seen every change before it, and a
-- rolled-back change gives its number back. Sequence numbers are therefore gapless, and a
-- poller that finds a gap knows rows it needed were pruned.
CREATE TABLE identity_change_head (
    id  int4 PRIMARY KEY CHECK (id = 1),
    seq int8 NOT NULL
);
INSERT INTO identity_change_head (id, seq) VALUES (1, 0);

-- One row per revoke or delete, with the identity's watermark after it. Servers poll for rows
-- past the last sequence number they applied; the newest rows are kept (older ones are pruned
-- by the writers), and a server that falls further behind reloads from `identities`.
CREATE TABLE identity_changes (
    seq                   int8 PRIMARY KEY,
    tenant_id             uuid NOT NULL,
    identity_id           uuid NOT NULL,
    tokens_revoked_before int8 NOT NULL,
    deleted               boolean NOT NULL,
    changed_at            int8 NOT NULL
);

-- A starting server loads the watermarks recent enough to still matter (a token lives at most
-- a day); this index keeps that from scanning every identity.
CREATE INDEX identities_by_revocation ON identities (tokens_revoked_before)
    WHERE tokens_revoked_before IS NOT NULL;
