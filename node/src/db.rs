//! The node database's shared helpers: records stored as JSON rows, and random ids.

/// The JSON `record` column of each row `sql` selects, parsed (rows that do not parse are
/// skipped): containers, networks and endpoints are all stored this way.
pub(crate) fn records<T: serde::de::DeserializeOwned>(
    db: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, rusqlite::Error> {
    let mut st = db.prepare(sql)?;
    let rows = st.query_map(params, |r| r.get::<_, String>(0))?;
    Ok(rows
        .filter_map(Result::ok)
        .filter_map(|s| serde_json::from_str(&s).ok())
        .collect())
}

/// 64 hex digits from the OS's random source (container, network and anonymous volume ids).
pub(crate) fn random_hex() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}

/// The node database (`<node>/containers.db`): one connection, shared by the containers and
/// the networks, so that what changes both (removing a container and its addresses) is one
/// transaction.
pub(crate) struct Db(std::sync::Mutex<rusqlite::Connection>);

impl Db {
    /// Opens (creating) the database: WAL, and no fsync per commit (a power loss may lose the
    /// last commits, never corrupt the file; a killed agent loses none).
    pub(crate) fn open(path: &std::path::Path) -> Result<std::sync::Arc<Db>, rusqlite::Error> {
        let db = rusqlite::Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(std::sync::Arc::new(Db(std::sync::Mutex::new(db))))
    }

    /// Runs `f` with the connection, as blocking work when called from an async worker (see
    /// [`offload`]). `f` must not call back into `with` (the connection is held).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut rusqlite::Connection) -> T) -> T {
        offload(|| {
            // A panic while the connection was held leaves it usable (an open transaction
            // rolled back when its guard dropped), so a poisoned lock is taken as it is.
            let mut conn = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut conn)
        })
    }
}

/// Runs `f`, a short piece of blocking work (SQLite, a small file), without stalling the async
/// tasks of the worker it is called on: on a multi-threaded runtime's worker the worker hands
/// its tasks to others for the duration (`block_in_place`); elsewhere `f` just runs.
pub(crate) fn offload<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
