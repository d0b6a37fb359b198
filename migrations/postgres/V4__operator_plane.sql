-- The operator plane: admin credentials, per-tenant rate limits, and what remains of a deleted
-- tenant. SQLite has the same under the same version in ../sqlite/.

-- Bearer credentials for the admin API. The secret is random and shown once; only its
-- argon2id hash (a PHC string) is kept, so a copy of the database cannot be used to log in.
-- Revoked credentials stay, so the audit trail's `operator:<id>` actors keep a meaning.
CREATE TABLE operator_credentials (
    credential_id uuid PRIMARY KEY,
    name          text NOT NULL,
    phc_hash      text NOT NULL,
    created_at    int8 NOT NULL,
    revoked_at    int8
);

-- A tenant's own rate limit for one operation, overriding the deployment's default. Both
-- columns NULL: the operation is unlimited for this tenant. No row: the default applies.
CREATE TABLE tenant_limits (
    tenant_id    uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    operation    text NOT NULL,
    max_requests int4,
    period_ms    int8,
    CHECK ((max_requests IS NULL) = (period_ms IS NULL)),
    PRIMARY KEY (tenant_id, operation)
);

-- A deleted tenant's rows are gone (identities, tokens, keys cascade), but its audit trail
-- stays until its retention purges it: this keeps the name the trail is shown under and the
-- retention that still applies to it.
CREATE TABLE deleted_tenants (
    tenant_id            uuid PRIMARY KEY,
    name                 text NOT NULL,
    deleted_at           int8 NOT NULL,
    audit_retention_days int4
);

-- The audit_log view names deleted tenants and the deployment chain (the nil tenant id) too.
DROP VIEW audit_log;
CREATE VIEW audit_log AS
SELECT
    e.tenant_id::text AS tenant_id,
    COALESCE(t.name, d.name,
             CASE WHEN e.tenant_id = '00000000-0000-0000-0000-000000000000'::uuid
                  THEN '(deployment)' END) AS tenant_name,
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
FROM audit_events e
LEFT JOIN tenants t ON t.tenant_id = e.tenant_id
LEFT JOIN deleted_tenants d ON d.tenant_id = e.tenant_id;
