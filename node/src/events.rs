//! What happens on the node, as docker's events: a container created, started, died, … ; a
//! network, volume or image changed. The domain emits them; the Engine API streams them
//! (`GET /events`). The last [`KEPT`] are kept in memory, so a client asking `since` a past
//! moment gets those first, as dockerd answers from its own log of recent events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// How many past events are kept for `since`.
pub const KEPT: usize = 1024;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Container,
    Image,
    Network,
    Volume,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Image => "image",
            Kind::Network => "network",
            Kind::Volume => "volume",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    /// docker's action word: `create`, `start`, `die`, `exec_start: sh`, `pull`, …
    pub action: String,
    /// The object's id (an image's reference, a volume's name, as docker does).
    pub id: String,
    /// `name`, `image`, the object's labels, `exitCode`, `signal`, …
    pub attributes: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub time_nano: i64,
}

impl Event {
    pub fn new(kind: Kind, action: impl Into<String>, id: impl Into<String>) -> Event {
        let time_nano = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Event {
            kind,
            action: action.into(),
            id: id.into(),
            attributes: BTreeMap::new(),
            time_nano,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Event {
        self.attributes.insert(key.to_string(), value.into());
        self
    }

    pub fn with_all(mut self, attrs: &BTreeMap<String, String>) -> Event {
        for (k, v) in attrs {
            self.attributes
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        self
    }
}

/// The node's event bus.
pub struct Events {
    tx: tokio::sync::broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: tokio::sync::broadcast::channel(KEPT).0,
            recent: Mutex::new(VecDeque::with_capacity(KEPT)),
        }
    }
}

impl Events {
    pub fn emit(&self, e: Event) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(e.clone());
        // Sent under the lock: a subscriber sees each event once, from the past or live.
        let _ = self.tx.send(e);
    }

    /// The kept past events and a receiver of every later one.
    pub fn subscribe(&self) -> (Vec<Event>, tokio::sync::broadcast::Receiver<Event>) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        (recent.iter().cloned().collect(), self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_events_are_kept_up_to_the_bound_and_later_ones_are_received() {
        let ev = Events::default();
        for i in 0..KEPT + 5 {
            ev.emit(Event::new(Kind::Container, "start", i.to_string()));
        }
        let (past, mut rx) = ev.subscribe();
        assert_eq!(past.len(), KEPT);
        assert_eq!(past[0].id, "5");
        ev.emit(Event::new(Kind::Volume, "create", "v").with("driver", "local"));
        let e = rx.try_recv().expect("a live event");
        assert_eq!(
            (e.kind, e.action.as_str(), e.id.as_str()),
            (Kind::Volume, "create", "v")
        );
        assert_eq!(e.attributes["driver"], "local");
    }
}
