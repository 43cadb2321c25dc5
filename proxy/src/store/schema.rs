//! The store's schema and its migrations, applied by voxproxy itself.
//!
//! Every connection runs [`migrate`] once before its first use. It is
//! idempotent and safe with several instances starting at once: the whole
//! migration is one transaction holding a transaction-scoped advisory lock,
//! so a second instance waits for the first, then finds the schema current
//! and changes nothing. PostgreSQL's DDL is transactional, so a migration
//! that fails leaves the schema as it was.

use tokio_postgres::Client;

/// The advisory lock key of the migration: "voxproxy" in ASCII, so it does
/// not collide with another application's small integers.
const MIGRATION_LOCK: i64 = 0x766f_7870_726f_7879;

/// The migrations in order; the schema is at version `MIGRATIONS.len()`.
/// Append only: a released migration never changes.
pub const MIGRATIONS: &[&str] = &[
    // 1: call records, instances and their live sessions.
    "CREATE TABLE voxproxy_call_records (
         call_sid    text PRIMARY KEY,
         stream_sid  text NOT NULL,
         instance_id text NOT NULL,
         started_at  timestamptz,
         ended_at    timestamptz,
         route       text,
         leg         text,
         end_reason  text NOT NULL,
         record      jsonb NOT NULL,
         written_at  timestamptz NOT NULL DEFAULT now()
     );
     CREATE INDEX voxproxy_call_records_started_at ON voxproxy_call_records (started_at);
     CREATE INDEX voxproxy_call_records_stream_sid ON voxproxy_call_records (stream_sid);
     CREATE INDEX voxproxy_call_records_instance ON voxproxy_call_records (instance_id, started_at);
     CREATE TABLE voxproxy_instances (
         instance_id  text PRIMARY KEY,
         admin_url    text NOT NULL,
         started_at   timestamptz NOT NULL,
         heartbeat_at timestamptz NOT NULL
     );
     CREATE TABLE voxproxy_sessions (
         stream_sid  text PRIMARY KEY,
         instance_id text NOT NULL REFERENCES voxproxy_instances ON DELETE CASCADE,
         call_sid    text NOT NULL,
         route       text,
         leg         text NOT NULL,
         started_at  timestamptz NOT NULL
     );
     CREATE INDEX voxproxy_sessions_instance ON voxproxy_sessions (instance_id);",
];

/// Brings the schema to the current version; returns the version it found.
///
/// # Errors
///
/// The database's error (the transaction is rolled back).
pub async fn migrate(client: &mut Client) -> Result<i32, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS voxproxy_schema_version (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i32 =
        tx.query_one("SELECT coalesce(max(version), 0) FROM voxproxy_schema_version", &[]).await?.get(0);
    for (version, sql) in (1i32..).zip(MIGRATIONS) {
        if version > found {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO voxproxy_schema_version (version) VALUES ($1)", &[&version]).await?;
        }
    }
    tx.commit().await?;
    Ok(found)
}
