//! Component health, reported by components and the pipeline builder and
//! read by health extensions (the Go collector's `componentstatus`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use crate::component::{ComponentId, Kind};

/// A component's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Being started.
    Starting,
    /// Running normally.
    Ok,
    /// Running but failing in a way it may recover from (e.g. an exporter
    /// whose endpoint is down).
    RecoverableError(String),
    /// Running but broken until reconfigured.
    PermanentError(String),
    /// Could not run at all.
    FatalError(String),
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
}

impl Status {
    /// The Go collector's name for this status, e.g. `StatusOK`.
    pub fn go_name(&self) -> &'static str {
        match self {
            Status::Starting => "StatusStarting",
            Status::Ok => "StatusOK",
            Status::RecoverableError(_) => "StatusRecoverableError",
            Status::PermanentError(_) => "StatusPermanentError",
            Status::FatalError(_) => "StatusFatalError",
            Status::Stopping => "StatusStopping",
            Status::Stopped => "StatusStopped",
        }
    }
    /// The error text, for the error statuses.
    pub fn error(&self) -> Option<&str> {
        match self {
            Status::RecoverableError(e) | Status::PermanentError(e) | Status::FatalError(e) => {
                Some(e)
            }
            _ => None,
        }
    }
}

/// A status with the time it was reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    /// The status.
    pub status: Status,
    /// When it was reported.
    pub at: SystemTime,
}

/// The collector as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CollectorState {
    /// Components are being started.
    Starting = 0,
    /// Every component started; data flows.
    Running = 1,
    /// Shutdown has begun; health endpoints answer 503.
    ShuttingDown = 2,
    /// Everything stopped.
    Stopped = 3,
}

/// One component instance on the board.
#[derive(Clone, Debug)]
pub struct ComponentStatus {
    /// Its kind.
    pub kind: Kind,
    /// Its id.
    pub id: ComponentId,
    /// The pipelines it belongs to (empty for extensions).
    pub pipelines: Vec<String>,
    /// Its latest status.
    pub event: StatusEvent,
}

/// The latest status of every component, and of the collector.
#[derive(Debug)]
pub struct StatusBoard {
    started_at: SystemTime,
    state: AtomicU8,
    components: Mutex<BTreeMap<(Kind, ComponentId), ComponentStatus>>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusBoard {
    /// An empty board, collector starting now.
    pub fn new() -> Self {
        Self {
            started_at: SystemTime::now(),
            state: AtomicU8::new(CollectorState::Starting as u8),
            components: Mutex::new(BTreeMap::new()),
        }
    }
    /// When the collector process began.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }
    /// The collector's state.
    pub fn state(&self) -> CollectorState {
        match self.state.load(Ordering::Acquire) {
            0 => CollectorState::Starting,
            1 => CollectorState::Running,
            2 => CollectorState::ShuttingDown,
            _ => CollectorState::Stopped,
        }
    }
    /// Sets the collector's state.
    pub fn set_state(&self, state: CollectorState) {
        self.state.store(state as u8, Ordering::Release);
    }
    /// Adds a component (status `Starting`) under the pipelines that use it.
    pub fn register(&self, kind: Kind, id: ComponentId, pipelines: Vec<String>) {
        let mut map = self
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = ComponentStatus {
            kind,
            id: id.clone(),
            pipelines,
            event: StatusEvent {
                status: Status::Starting,
                at: SystemTime::now(),
            },
        };
        map.insert((kind, id), entry);
    }
    /// Records a component's new status.
    pub fn report(&self, kind: Kind, id: &ComponentId, status: Status) {
        let mut map = self
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (kind, id.clone());
        let event = StatusEvent {
            status,
            at: SystemTime::now(),
        };
        match map.get_mut(&key) {
            Some(entry) => entry.event = event,
            None => {
                map.insert(
                    key,
                    ComponentStatus {
                        kind,
                        id: id.clone(),
                        pipelines: vec![],
                        event,
                    },
                );
            }
        }
    }
    /// A copy of every component's status.
    pub fn snapshot(&self) -> Vec<ComponentStatus> {
        let map = self
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.values().cloned().collect()
    }
    /// A reporter bound to one component.
    pub fn reporter(self: &Arc<Self>, kind: Kind, id: ComponentId) -> StatusReporter {
        StatusReporter {
            board: self.clone(),
            kind,
            id,
        }
    }
}

/// Reports one component's status; handed to it at creation.
#[derive(Clone, Debug)]
pub struct StatusReporter {
    board: Arc<StatusBoard>,
    kind: Kind,
    id: ComponentId,
}

impl StatusReporter {
    /// Records a new status for this component.
    pub fn report(&self, status: Status) {
        self.board.report(self.kind, &self.id, status);
    }
}
