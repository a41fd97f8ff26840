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
