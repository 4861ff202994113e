//! The PostgreSQL store: several `adtally serve` nodes sharing one database (deployment
//! tier 2). It implements the same [`Store`] trait as the embedded SQLite store, with
//! the same tables in spirit (`schema.rs`), and adds what several writers need:
//!
//! - ids from the database (identity columns; events from a sequence), never from a
//!   process's counter;
//! - "at most one counted impression and click per decision" enforced by a unique key
//!   (`counted`) claimed in the same transaction as the events, so two nodes that
//!   receive beacons of the same decision cannot both count it (`events.rs`);
//! - budget leases: a node spends only money it has leased atomically from the
//!   database (`leases.rs`);
//! - a node registry with heartbeats, so a dead node's leases stop counting.
//!
//! The driver is tokio-postgres. The `Store` trait is synchronous (the server calls it on
//! blocking threads, as it does SQLite), so each call runs its queries on the calling
//! thread with [`block_on`], while the connections' I/O is driven by a small runtime the
//! store owns. That also makes the store callable from inside the server's runtime
//! (start-up, tests) without nesting runtimes.

mod accounts;
mod catalog;
mod cluster;
mod events;
mod schema;
mod store_impl;

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::{Result, StoreError};

/// Connections a node opens at most for reads and management writes (the event writer
/// has its own).
const POOL_SIZE: usize = 8;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => StoreError::Database(format!("{}: {}", db.code().code(), db.message())),
            None => StoreError::Database(e.to_string()),
        }
    }
}

/// Whether an error is a unique-key violation (a conflict, not a failure).
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Runs a future to completion on this thread, parking it while the future waits. The
/// futures here only wait for messages from connection tasks running on the store's
/// own runtime, so nothing else needs to be driven.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Opens connections and keeps up to [`POOL_SIZE`] of them.
struct Pool {
    config: tokio_postgres::Config,
    runtime: tokio::runtime::Handle,
    idle: Mutex<(Vec<Client>, usize)>,
    freed: Condvar,
}

impl Pool {
    fn connect(&self) -> Result<Client> {
        let _context = self.runtime.enter();
        let config = self.config.clone();
        let runtime = self.runtime.clone();
        block_on(async move {
            let (client, connection) = config.connect(NoTls).await?;
            runtime.spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!("postgres connection ended: {e}");
                }
            });
            Ok(client)
        })
    }

    /// An idle connection, a new one while fewer than the limit are open, or the next
    /// one given back.
    fn get(&self) -> Result<Pooled<'_>> {
        let mut guard = self.idle.lock().map_err(|_| poisoned())?;
        loop {
            while let Some(client) = guard.0.pop() {
                if !client.is_closed() {
                    return Ok(Pooled { pool: self, client: Some(client) });
                }
                guard.1 -= 1;
            }
            if guard.1 < POOL_SIZE {
                guard.1 += 1;
                drop(guard);
                return match self.connect() {
                    Ok(client) => Ok(Pooled { pool: self, client: Some(client) }),
                    Err(e) => {
                        if let Ok(mut g) = self.idle.lock() {
                            g.1 -= 1;
                        }
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            guard = self.freed.wait(guard).map_err(|_| poisoned())?;
        }
    }
}

/// A pooled connection, given back when dropped (or forgotten if it broke).
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let (Some(client), Ok(mut guard)) = (self.client.take(), self.pool.idle.lock()) {
            if client.is_closed() {
                guard.1 -= 1;
            } else {
                guard.0.push(client);
            }
        }
        self.pool.freed.notify_one();
    }
}

fn poisoned() -> StoreError {
    StoreError::Database("a connection lock was poisoned by an earlier panic".into())
}

/// The PostgreSQL store of one node.
pub struct PgStore {
    pool: Pool,
    writer: Mutex<events::Writer>,
    node_id: i64,
    /// This node's decision-id slot among the live nodes.
    slot: i32,
    /// Drives the connections; shut down in the background on drop, so dropping the
    /// store inside another runtime does not block it.
    runtime: Option<tokio::runtime::Runtime>,
    /// The node's data directory (its journal), held like SQLite's.
    _lock: Option<crate::DataDirLock>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // A node that stops gives its leases back and leaves the registry's live set at
        // once, so it can start again under its name without waiting for the timeout.
        if let Ok(mut writer) = self.writer.lock() {
            let node = self.node_id;
            let stopped: Result<()> = block_on(async {
                let tx = writer.conn.transaction().await?;
                cluster::release_all(&tx, node).await?;
                tx.execute("UPDATE nodes SET heartbeat_ms = 0 WHERE id = $1", &[&node]).await?;
                tx.commit().await?;
                Ok(())
            });
            if let Err(e) = stopped {
                tracing::warn!(error = %e, "could not sign this node off; its name is free after the lease timeout");
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`), applies the
    /// migrations (one node at a time, under an advisory lock) and registers this node.
    /// `node_name` identifies the node in the registry (its host name, say).
    pub fn connect(url: &str, node_name: &str) -> Result<Self> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Database(format!("--database is not a PostgreSQL URL: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("adtally-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(format!("cannot start the PostgreSQL driver: {e}")))?;
        let pool = Pool {
            config,
            runtime: runtime.handle().clone(),
            idle: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
        };
        let mut migrator = pool.connect()?;
        block_on(schema::migrate(&mut migrator))?;
        // A node restarted right after it died finds its name still beating: it waits
        // for the lease timeout, after which nobody counts on its old leases.
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(cluster::LEASE_TIMEOUT_MS as u64 + 2_000);
        let (node_id, slot) = loop {
            if let Some(registered) = block_on(schema::register_node(&mut migrator, node_name))? {
                break registered;
            }
            if std::time::Instant::now() >= deadline {
                return Err(StoreError::Refused {
                    code: "node_name_in_use",
                    message: format!(
                        "a running node is registered as {node_name:?}; give this one another --node-name"
                    ),
                });
            }
            tracing::info!(node = node_name, "waiting for this node's previous run to time out");
            std::thread::sleep(std::time::Duration::from_millis(500));
        };
        let writer = events::Writer::new(pool.connect()?, node_id);
        Ok(Self { pool, writer: Mutex::new(writer), node_id, slot, runtime: Some(runtime), _lock: None })
    }

    /// Creates database `name` on the server of `url` unless it exists, and returns the
    /// URL of it (tests and tooling: a fresh database per test).
    pub fn create_database(url: &str, name: &str) -> Result<String> {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
            return Err(StoreError::Database(format!("not a plain database name: {name:?}")));
        }
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Database(format!("not a PostgreSQL URL: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let pool = Pool {
            config,
            runtime: runtime.handle().clone(),
            idle: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
        };
        let created =
            pool.connect().and_then(|c| match block_on(c.batch_execute(&format!("CREATE DATABASE {name}"))) {
                Ok(()) => Ok(()),
                Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
                Err(e) => Err(StoreError::from(e)),
            });
        runtime.shutdown_background();
        created?;
        let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
        Ok(format!("{base}/{name}"))
    }

    /// Keeps the node's data-directory lock as long as the store lives.
    pub fn holding(mut self, lock: crate::DataDirLock) -> Self {
        self._lock = Some(lock);
        self
    }

    /// This node's id in the registry (also its part of every lease).
    pub fn node_id(&self) -> i64 {
        self.node_id
    }

    pub(crate) fn conn(&self) -> Result<Pooled<'_>> {
        self.pool.get()
    }
}
