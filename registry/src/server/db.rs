//! The registry's SQL database: SQLite (embedded default, one file under the data dir) or
//! PostgreSQL (`registry.metadata.url = "postgres://…"`, shared by several replicas).
//!
//! Queries are written once, in the SQL both understand, with `?N` placeholders (rewritten to
//! `$N` for PostgreSQL). Values cross as [`Value`] and come back as [`Row`]s, so the callers
//! never see which database it is. Every write runs in one transaction that excludes all other
//! writers — SQLite's `BEGIN IMMEDIATE`, and on PostgreSQL a transaction-scoped advisory lock
//! taken first — so the rules that span rows (a manifest may only name linked blobs; the
//! collector's re-checked deletes) hold the same way on both, across replicas too.
//!
//! The schema is one list of migrations in SQLite's dialect; [`pg_dialect`] turns the few
//! differences (integer keys, `BLOB`, `WITHOUT ROWID`) into PostgreSQL's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use postgres::types::{IsNull, ToSql, Type};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("metadata database {what}: {message}")]
    Open { what: String, message: String },
    #[error("metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("metadata database: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("metadata database: column {column}: {message}")]
    Type { column: usize, message: String },
    #[error("metadata database lock poisoned")]
    Poisoned,
}

/// Now, in the whole seconds since the Unix epoch that every timestamp column holds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Int(v as i64)
            }
        }
    )*};
}
from_int!(i64, i32, u32, u64, usize);

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(i64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Blob(v.to_vec())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// `args![a, b]`: the arguments of a query.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::server::db::Value::from($v)),*][..]
    };
}
pub(crate) use args;

/// One result row.
#[derive(Debug)]
pub struct Row(Vec<Value>);

/// Conversion out of a [`Value`].
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self, String>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
impl FromValue for u64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        i64::from_value(v).map(|i| i.max(0) as u64)
    }
}
impl FromValue for u32 {
    fn from_value(v: &Value) -> Result<Self, String> {
        i64::from_value(v).and_then(|i| u32::try_from(i).map_err(|e| e.to_string()))
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Result<Self, String> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl Row {
    pub fn get<T: FromValue>(&self, column: usize) -> Result<T, DbError> {
        let v = self.0.get(column).ok_or_else(|| DbError::Type {
            column,
            message: "no such column".into(),
        })?;
        T::from_value(v).map_err(|message| DbError::Type { column, message })
    }
}

/// A connection, inside or outside a transaction.
pub trait Conn {
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError>;
    /// Runs a query; all its rows.
    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError>;

    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, args: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }
}

/// The first column of the first row of `sql`, if any (for `dyn Conn`).
pub fn value<T: FromValue>(
    c: &mut dyn Conn,
    sql: &str,
    args: &[Value],
) -> Result<Option<T>, DbError> {
    c.query_opt(sql, args)?.map(|r| r.get(0)).transpose()
}

/// Whether `sql` returns a row.
pub fn exists(c: &mut dyn Conn, sql: &str, args: &[Value]) -> Result<bool, DbError> {
    Ok(c.query_opt(sql, args)?.is_some())
}

// --- SQLite ---------------------------------------------------------------------------------

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

struct Sqlite<'a>(&'a rusqlite::Connection);

impl Conn for Sqlite<'_> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        let n = self
            .0
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(args))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        use rusqlite::types::ValueRef;
        let mut st = self.0.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Int(v as i64),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }
}

fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, DbError> {
    let open = |path: &Path| -> rusqlite::Result<rusqlite::Connection> {
        let c = rusqlite::Connection::open(path)?;
        c.busy_timeout(std::time::Duration::from_secs(30))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        c.pragma_update(None, "foreign_keys", "ON")?;
        // 1 MiB of page cache per connection: the hot rows (tags, manifests) fit easily.
        c.pragma_update(None, "cache_size", -1024)?;
        Ok(c)
    };
    open(path).map_err(|e| DbError::Open {
        what: path.display().to_string(),
        message: e.to_string(),
    })
}

// --- PostgreSQL -----------------------------------------------------------------------------

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A PostgreSQL client with its prepared statements.
struct PgClient {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

/// `?N` → `$N` (our SQL has no `?` inside string literals).
fn pg_placeholders(sql: &str) -> String {
    sql.replace('?', "$")
}

impl PgClient {
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, DbError> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(&pg_placeholders(sql))?;
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

fn pg_args(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

fn pg_value(r: &postgres::Row, i: usize) -> Result<Value, DbError> {
    let ty = r.columns()[i].type_().clone();
    let v = match ty {
        Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => r
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => r
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => r
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        _ => r.try_get::<_, Option<String>>(i)?.map(Value::Text),
    };
    Ok(v.unwrap_or(Value::Null))
}

impl Conn for PgClient {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        let st = self.statement(sql)?;
        Ok(self.client.execute(&st, &pg_args(args))?)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let st = self.statement(sql)?;
        let rows = self.client.query(&st, &pg_args(args))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| pg_value(r, i))
                    .collect::<Result<_, _>>()
            })
            .map(|r| r.map(Row))
            .collect()
    }
}

/// Key of the advisory lock every write transaction takes on PostgreSQL.
const PG_WRITE_LOCK: i64 = 0x7265_6700; // "reg\0"

fn open_pg(url: &str) -> Result<PgClient, DbError> {
    let mut client =
        postgres::Client::connect(url, postgres::NoTls).map_err(|e| DbError::Open {
            what: redact(url),
            message: format!("{e} — is PostgreSQL running and does the database exist?"),
        })?;
    // `CREATE … IF NOT EXISTS` of an existing table is not worth a log line.
    client.batch_execute("SET client_min_messages = warning")?;
    Ok(PgClient {
        client,
        statements: HashMap::new(),
    })
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

// --- The pool -------------------------------------------------------------------------------

/// Reader connections kept open; more may exist briefly under load, then are closed.
const READ_POOL: usize = 8;

enum Backend {
    Sqlite {
        path: PathBuf,
        writer: Mutex<rusqlite::Connection>,
        readers: Mutex<Vec<rusqlite::Connection>>,
    },
    Postgres {
        url: String,
        writer: Box<Mutex<PgClient>>,
        readers: Mutex<Vec<PgClient>>,
    },
}

/// Connections to the metadata database: one writer, a pool of readers.
pub struct Db {
    /// `None` only while dropping.
    backend: Option<Backend>,
}

impl Drop for Db {
    fn drop(&mut self) {
        // The postgres crate closes a client by blocking on its own runtime, which panics on a
        // tokio worker (where the server drops its state): close them on a plain thread.
        if let Some(b @ Backend::Postgres { .. }) = self.backend.take() {
            let _ = std::thread::spawn(move || drop(b)).join();
        }
    }
}

/// Where the metadata lives: `postgres://…` / `postgresql://…`, or a SQLite file.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Db {
    /// Opens (creating and migrating) the database: `url` when it is a PostgreSQL URL, else the
    /// SQLite file at `url` (`sqlite://` prefix optional) or, when `url` is empty, `default`.
    pub fn open(url: &str, default: &Path) -> Result<Db, DbError> {
        let backend = if is_postgres(url) {
            let writer = open_pg(url)?;
            Backend::Postgres {
                url: url.to_string(),
                writer: Box::new(Mutex::new(writer)),
                readers: Mutex::new(Vec::new()),
            }
        } else {
            let path = match url.strip_prefix("sqlite://").unwrap_or(url) {
                "" => default.to_path_buf(),
                p => PathBuf::from(p),
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| DbError::Open {
                    what: path.display().to_string(),
                    message: e.to_string(),
                })?;
            }
            let writer = open_sqlite(&path)?;
            Backend::Sqlite {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
            }
        };
        let db = Db {
            backend: Some(backend),
        };
        db.migrate()?;
        Ok(db)
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Some(Backend::Postgres { .. }) => "postgres",
            _ => "sqlite",
        }
    }

    fn backend(&self) -> Result<&Backend, DbError> {
        self.backend.as_ref().ok_or(DbError::Poisoned)
    }

    /// Runs `f` in a write transaction that excludes every other writer (this process's and
    /// any other's on the same database); commits when `f` returns `Ok`, else rolls back.
    pub fn write<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        match self.backend()? {
            Backend::Sqlite { writer, .. } => {
                let c = writer.lock().map_err(|_| DbError::Poisoned)?;
                c.execute_batch("BEGIN IMMEDIATE").map_err(DbError::from)?;
                finish(f(&mut Sqlite(&c)), |sql| {
                    c.execute_batch(sql).map_err(DbError::from)
                })
            }
            Backend::Postgres { writer, .. } => {
                let mut c = writer.lock().map_err(|_| DbError::Poisoned)?;
                c.client.batch_execute("BEGIN").map_err(DbError::from)?;
                let locked = c
                    .client
                    .execute("SELECT pg_advisory_xact_lock($1)", &[&PG_WRITE_LOCK])
                    .map_err(DbError::from);
                if let Err(e) = locked {
                    let _ = c.client.batch_execute("ROLLBACK");
                    return Err(e.into());
                }
                let out = f(&mut *c);
                finish(out, |sql| {
                    c.client.batch_execute(sql).map_err(DbError::from)
                })
            }
        }
    }

    /// Runs `f` on a reader connection (each statement sees the latest commit).
    pub fn read<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        self.reader(false, f)
    }

    /// Runs `f` in one read transaction: every query sees the database as of one moment.
    pub fn snapshot<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        self.reader(true, f)
    }

    fn reader<T, E: From<DbError>>(
        &self,
        snapshot: bool,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        match self.backend()? {
            Backend::Sqlite { path, readers, .. } => {
                let pooled = readers.lock().map_err(|_| DbError::Poisoned)?.pop();
                let c = match pooled {
                    Some(c) => c,
                    None => open_sqlite(path)?,
                };
                let out = if snapshot {
                    c.execute_batch("BEGIN").map_err(DbError::from)?;
                    finish(f(&mut Sqlite(&c)), |_| {
                        c.execute_batch("COMMIT").map_err(DbError::from)
                    })
                } else {
                    f(&mut Sqlite(&c))
                };
                give_back(readers, c);
                out
            }
            Backend::Postgres { url, readers, .. } => {
                let pooled = readers.lock().map_err(|_| DbError::Poisoned)?.pop();
                let mut c = match pooled {
                    Some(c) => c,
                    None => open_pg(url)?,
                };
                let out = if snapshot {
                    c.client
                        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                        .map_err(DbError::from)?;
                    let out = f(&mut c);
                    finish(out, |_| {
                        c.client.batch_execute("COMMIT").map_err(DbError::from)
                    })
                } else {
                    f(&mut c)
                };
                // A connection the server closed is not worth keeping.
                if !c.client.is_closed() {
                    give_back(readers, c);
                }
                out
            }
        }
    }

    fn migrate(&self) -> Result<(), DbError> {
        let pg = self.kind() == "postgres";
        self.write(|c| -> Result<(), DbError> {
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
                &[],
            )?;
            let done: i64 =
                value(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])?
                    .unwrap_or(0);
            for (version, sql) in MIGRATIONS.iter().enumerate().map(|(i, s)| (i as i64 + 1, s)) {
                if version <= done {
                    continue;
                }
                for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    let statement = if pg {
                        pg_dialect(statement)
                    } else {
                        statement.to_string()
                    };
                    c.execute(&statement, &[])?;
                }
                c.execute(
                    "INSERT INTO schema_migrations(version, applied_at) VALUES (?1, ?2)",
                    args![version, now()],
                )?;
            }
            Ok(())
        })
    }
}

/// Commits (or on error rolls back) and passes `out` on.
fn finish<T, E: From<DbError>>(
    out: Result<T, E>,
    mut run: impl FnMut(&str) -> Result<(), DbError>,
) -> Result<T, E> {
    match out {
        Ok(v) => {
            if let Err(e) = run("COMMIT") {
                let _ = run("ROLLBACK");
                return Err(e.into());
            }
            Ok(v)
        }
        Err(e) => {
            let _ = run("ROLLBACK");
            Err(e)
        }
    }
}

fn give_back<C>(pool: &Mutex<Vec<C>>, c: C) {
    if let Ok(mut pool) = pool.lock() {
        if pool.len() < READ_POOL {
            pool.push(c);
        }
    }
}

/// SQLite's DDL in PostgreSQL's words: 64-bit integers throughout (the values are Unix times
/// and sizes), `BYTEA` for `BLOB`, identity columns for `INTEGER PRIMARY KEY`, no `WITHOUT ROWID`.
pub fn pg_dialect(sql: &str) -> String {
    sql.replace(
        "INTEGER PRIMARY KEY",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    )
    .replace("INTEGER", "BIGINT")
    .replace(" BLOB", " BYTEA")
    .replace(") WITHOUT ROWID", ")")
}

/// The schema, one migration per entry, in SQLite's dialect. Append; never edit an entry that
/// has shipped. Entry 1 is written with `IF NOT EXISTS` so that databases made before
/// migrations were numbered take it as a no-op.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE IF NOT EXISTS repos (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repo_blobs (
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    digest TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS manifests (
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    content BLOB NOT NULL,
    subject TEXT,
    artifact_type TEXT,
    annotations TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX IF NOT EXISTS manifests_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;
CREATE TABLE IF NOT EXISTS manifest_refs (
    repo_id INTEGER NOT NULL,
    digest TEXT NOT NULL,
    child TEXT NOT NULL,
    PRIMARY KEY (repo_id, digest, child)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    admin INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS orgs (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS org_members (
    org TEXT NOT NULL,
    "user" TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (org, "user")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repo_visibility (
    name TEXT PRIMARY KEY,
    public INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS access_tokens (
    id TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    scopes TEXT NOT NULL,
    expires_at INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refresh_tokens (
    secret_sha256 TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    client TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS manifest_refs_child ON manifest_refs(repo_id, child);
CREATE INDEX IF NOT EXISTS repo_blobs_digest ON repo_blobs(digest);
CREATE TABLE IF NOT EXISTS gc_lock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID
"#,
    r#"
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID
"#,
    r#"
ALTER TABLE uploads ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN multipart TEXT;
ALTER TABLE uploads ADD COLUMN parts TEXT NOT NULL DEFAULT '';
ALTER TABLE uploads ADD COLUMN parts_bytes INTEGER NOT NULL DEFAULT 0
"#,
    // A user's credentials generation (bumped when their password changes: every JWT and
    // cached login of an older generation stops working at once, on every replica); who
    // opened an upload session (sessions are capped per identity and address); and the fact
    // that this registry has had users, after which it never serves open again.
    r#"
ALTER TABLE users ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE uploads ADD COLUMN client TEXT NOT NULL DEFAULT '';
INSERT INTO secrets(name, value, created_at) SELECT 'auth.required', '1', 0 WHERE EXISTS (SELECT 1 FROM users)
"#,
    // Webhook deliveries waiting (or failed for good): one row per event and endpoint.
    r#"
CREATE TABLE IF NOT EXISTS notify_queue (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    failed INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS notify_queue_due ON notify_queue(endpoint, failed, next_ms)
"#,
    // Storage quotas: a namespace's or a repository's limit in bytes.
    r#"
CREATE TABLE IF NOT EXISTS quotas (
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    limit_bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, kind)
) WITHOUT ROWID
"#,
    // Who last moved a tag (the web interface's tags page), and when a manifest was last
    // pulled (written in batches by `pulls::Pulls`).
    r#"
ALTER TABLE tags ADD COLUMN pushed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE manifests ADD COLUMN pulled_at INTEGER NOT NULL DEFAULT 0
"#,
    // The web interface's sessions, shared by replicas: the cookie's sha256, and the user's
    // credentials generation at the login (a changed password or a removed user ends them).
    r#"
CREATE TABLE IF NOT EXISTS ui_sessions (
    id TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    csrf TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ui_sessions_user ON ui_sessions("user", created_at)
"#,
    // Retention rules added in the web interface (after the configuration's).
    r#"
CREATE TABLE IF NOT EXISTS retention_rules (
    id INTEGER PRIMARY KEY,
    repositories TEXT NOT NULL,
    keep_last INTEGER NOT NULL DEFAULT 0,
    keep_newer_than TEXT NOT NULL DEFAULT '',
    immutable_tags TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
)
"#,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_reads_as_postgres() {
        let ddl = pg_dialect(
            "CREATE TABLE IF NOT EXISTS t (\n    id INTEGER PRIMARY KEY,\n    b BLOB NOT NULL\n) WITHOUT ROWID",
        );
        assert_eq!(
            ddl,
            "CREATE TABLE IF NOT EXISTS t (\n    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n    b BYTEA NOT NULL\n)"
        );
        assert_eq!(pg_placeholders("a = ?1 AND b = ?12"), "a = $1 AND b = $12");
        assert_eq!(
            redact("postgres://reg:secret@127.0.0.1/reg"),
            "postgres://reg:***@127.0.0.1/reg"
        );
    }

    #[test]
    fn sqlite_migrates_once_and_rolls_back_on_error() {
        let t = tempfile::tempdir().expect("tempdir");
        let path = t.path().join("m.db");
        let db = Db::open("", &path).expect("open");
        let again =
            Db::open(&format!("sqlite://{}", path.display()), Path::new("/none")).expect("reopen");
        let versions: Option<i64> = again
            .read(|c| value(c, "SELECT count(*) FROM schema_migrations", &[]))
            .expect("count");
        assert_eq!(versions, Some(MIGRATIONS.len() as i64));
        let failed: Result<(), DbError> = db.write(|c| {
            c.execute(
                "INSERT INTO orgs(name, created_at) VALUES (?1, ?2)",
                args!["o", 1],
            )?;
            Err(DbError::Poisoned)
        });
        assert!(failed.is_err());
        let n: Option<i64> = db
            .read(|c| value(c, "SELECT count(*) FROM orgs", &[]))
            .expect("count");
        assert_eq!(n, Some(0), "the failed transaction left nothing");
    }
}
