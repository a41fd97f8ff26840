//! Docker's `GET /events`: the node's events as a stream of JSON messages, with `since` (the
//! kept past ones first), `until` (the stream ends then) and filters (type, container, image,
//! label, event, network, volume).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::engine_filters::Filters;
use super::error::ApiError;
use super::shared::{channel_body, AgentState};
use crate::events::{Event, Kind};

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    filters: Option<String>,
}

/// A point in time as docker's clients send it: unix seconds, with an optional fraction
/// (`1700000000.123456789`); in nanoseconds.
pub(super) fn parse_time(s: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::bad_request(format!("invalid time {s:?}: expected unix seconds"));
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let mut nanos: i64 = 0;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        nanos = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    }
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos))
        .ok_or_else(bad)
}

pub(super) fn now_nanos() -> i64 {
    crate::events::Event::new(Kind::Container, "", "").time_nano
}

/// docker's JSON message of an event.
fn message(e: &Event) -> Value {
    let mut v = json!({
        "Type": e.kind.as_str(),
        "Action": e.action,
        "Actor": { "ID": e.id, "Attributes": e.attributes },
        "scope": "local",
        "time": e.time_nano / 1_000_000_000,
        "timeNano": e.time_nano,
    });
    // The fields of the old format, still read by older clients (and docker-py).
    if matches!(e.kind, Kind::Container | Kind::Image) {
        v["status"] = json!(e.action);
        v["id"] = json!(e.id);
        if let Some(image) = e.attributes.get("image") {
            v["from"] = json!(image);
        }
    }
    v
}

fn matches(f: &Filters, e: &Event) -> bool {
    let attr = |k: &str| e.attributes.get(k).map(String::as_str);
    let action_word = e.action.split(':').next().unwrap_or("");
    let about =
        |kind: Kind, v: &str| e.kind == kind && (e.id.starts_with(v) || attr("name") == Some(v));
    f.any("type", |v| v == e.kind.as_str())
        && f.any("event", |v| v == e.action || v == action_word)
        && f.any("container", |v| {
            about(Kind::Container, v) || attr("container").is_some_and(|c| c.starts_with(v))
        })
        && f.any("image", |v| {
            attr("image") == Some(v) || (e.kind == Kind::Image && e.id == v)
        })
        && f.any("network", |v| about(Kind::Network, v))
        && f.any("volume", |v| about(Kind::Volume, v))
        && f.labels_match("label", attr)
}

/// `GET /events[?since=&until=&filters=]`.
pub async fn events(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(
        q.filters.as_deref(),
        &[
            "type",
            "event",
            "container",
            "image",
            "label",
            "network",
            "volume",
        ],
    )?;
    let since = q
        .since
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(parse_time)
        .transpose()?;
    let until = q
        .until
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(parse_time)
        .transpose()?;
    let (past, mut live) = st.containers.events.subscribe();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let send =
        move |e: &Event| -> bool { tx.send(Bytes::from(format!("{}\n", message(e)))).is_ok() };
    tokio::spawn(async move {
        let in_range = |e: &Event| {
            since.is_none_or(|s| e.time_nano >= s) && until.is_none_or(|u| e.time_nano <= u)
        };
        if since.is_some() {
            for e in past.iter().filter(|e| in_range(e) && matches(&f, e)) {
                if !send(e) {
                    return;
                }
            }
        }
        let deadline = until.map(|u| {
            let left = u.saturating_sub(now_nanos()).max(0) as u64;
            tokio::time::Instant::now() + std::time::Duration::from_nanos(left)
        });
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, live.recv()).await.ok(),
                    None => Some(live.recv().await),
                }
            };
            match next.await {
                // `until` reached: the stream ends.
                None => return,
                Some(Ok(e)) => {
                    if in_range(&e) && matches(&f, &e) && !send(&e) {
                        return;
                    }
                }
                // A client this far behind misses events, as with dockerd; it keeps the rest.
                Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(channel_body(rx))
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_dockers_clients_send_them() {
        assert_eq!(parse_time("12").ok(), Some(12_000_000_000));
        assert_eq!(parse_time("12.5").ok(), Some(12_500_000_000));
        assert_eq!(parse_time("12.000000001").ok(), Some(12_000_000_001));
        assert!(parse_time("12.0000000001").is_err());
        assert!(parse_time("soon").is_err());
    }

    #[test]
    fn filters_pick_events_by_type_action_and_object() {
        let e = Event::new(Kind::Container, "exec_start: sh -c true", "abcdef")
            .with("name", "web")
            .with("image", "r/app:1")
            .with("tier", "front");
        let f = |raw: &str| {
            Filters::parse(
                Some(raw),
                &[
                    "type",
                    "event",
                    "container",
                    "image",
                    "label",
                    "network",
                    "volume",
                ],
            )
            .expect("filters")
        };
        assert!(matches(&f(r#"{"event":["exec_start"]}"#), &e));
        assert!(matches(
            &f(r#"{"container":["web"],"type":["container"]}"#),
            &e
        ));
        assert!(matches(&f(r#"{"container":["abc"]}"#), &e));
        assert!(matches(&f(r#"{"label":["tier=front"]}"#), &e));
        assert!(!matches(&f(r#"{"type":["network"]}"#), &e));
        assert!(!matches(&f(r#"{"image":["r/other:1"]}"#), &e));
    }
}
