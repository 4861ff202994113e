//! Events on PostgreSQL: the batch append (claims, judging, raw events, rollups, spend
//! and lease use in one transaction), and the reads over events and rollups.

use tokio_postgres::Client;

/// The event writer's own connection.
pub(crate) struct Writer {
    pub(super) conn: Client,
    pub(super) node_id: i64,
}

impl Writer {
    pub(super) fn new(conn: Client, node_id: i64) -> Self {
        Self { conn, node_id }
    }
}
