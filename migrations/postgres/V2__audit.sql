-- The audit log: every identity and token event, tenant change and failed authentication,
-- written in the same transaction as the change it describes. See src/domain/audit.rs for
-- the hash chain. There is no foreign key to tenants on purpose: a tenant's trail outlives
-- the tenant, until its retention purges it.

CREATE TABLE audit_events (
    tenant_id         uuid NOT NULL,
    seq               int8 NOT NULL,
    occurred_at       int8 NOT NULL,
    actor             text NOT NULL,
    operation         text NOT NULL,
    identity_id       uuid,
    outcome           text NOT NULL,
    client_request_id text,
    request_id        text,
    source_address    text,
    user_agent        text,
    details           text NOT NULL,
    prev_hash         bytea NOT NULL,
    hash              bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
-- One identity's events, in order: the query the API and operators run most.
CREATE INDEX audit_events_by_identity ON audit_events (tenant_id, identity_id, seq)
    WHERE identity_id IS NOT NULL;
-- Time ranges (exports, "last week") and retention purges.
CREATE INDEX audit_events_by_time ON audit_events (tenant_id, occurred_at);

-- The end of each tenant's chain, locked by every transaction that appends to it, and the
-- anchor where the chain starts after old events were purged.
CREATE TABLE audit_chains (
    tenant_id   uuid PRIMARY KEY,
    last_seq    int8 NOT NULL,
    last_hash   bytea NOT NULL,
    anchor_seq  int8 NOT NULL,
    anchor_hash bytea NOT NULL
);
INSERT INTO audit_chains (tenant_id, last_seq, last_hash, anchor_seq, anchor_hash)
    SELECT tenant_id, 0, decode(repeat('00', 32), 'hex'), 0, decode(repeat('00', 32), 'hex')
    FROM tenants;

-- Days of audit events a tenant keeps; NULL keeps them forever.
ALTER TABLE tenants ADD COLUMN audit_retention_days int4;

-- The stable, documented view for direct SQL (psql). Same columns as on SQLite.
CREATE VIEW audit_log AS
SELECT
    e.tenant_id::text AS tenant_id,
    t.name AS tenant_name,
    e.seq AS seq,
    to_char(to_timestamp(e.occurred_at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS occurred_at,
    e.actor AS actor,
    e.operation AS operation,
    CASE WHEN e.identity_id IS NULL THEN NULL
         ELSE '8:acs:' || e.tenant_id::text || '_' || e.identity_id::text END AS identity,
    e.outcome AS outcome,
    e.client_request_id AS client_request_id,
    e.request_id AS request_id,
    e.source_address AS source_address,
    e.user_agent AS user_agent,
    e.details AS details,
    e.occurred_at AS occurred_at_ms
FROM audit_events e LEFT JOIN tenants t ON t.tenant_id = e.tenant_id;
