//! Liveness of the daemon's long-running tasks.
//!
//! A task that must run for the daemon's whole life (one sender per MRO, for example) is started
//! with `app::supervise`: if it panics it is restarted after a growing pause, the restart is counted
//! (`custodian_task_restarts_total`), and while it is down [`Health`] says so — `/healthz` and
//! `/readyz` answer 503 naming the task — so a dead sender can never hide behind a green health
//! check while reports wait. Nothing about the panic's payload is kept or shown: it could carry
//! anything, and health is readable without authentication.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The state of one supervised task.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TaskHealth {
    /// Running now.
    pub up: bool,
    /// Times it died and was restarted since the daemon started.
    pub restarts: u64,
}

/// The supervised tasks of one daemon, by name (e.g. `sender MRO-0042`).
#[derive(Debug, Default)]
pub struct Health {
    tasks: Mutex<BTreeMap<String, TaskHealth>>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// Changes the state of task `name` (made known on first use).
    pub fn update(&self, name: &str, f: impl FnOnce(&mut TaskHealth)) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        f(tasks.entry(name.to_string()).or_default());
    }

    /// Every supervised task and its state.
    pub fn tasks(&self) -> BTreeMap<String, TaskHealth> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The names of the tasks that are down (died and not yet restarted).
    pub fn down(&self) -> Vec<String> {
        self.tasks()
            .into_iter()
            .filter(|(_, t)| !t.up)
            .map(|(n, _)| n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_lists_only_tasks_not_running() {
        let h = Health::new();
        assert!(h.down().is_empty());
        h.update("a", |t| t.up = true);
        h.update("b", |t| {
            t.up = false;
            t.restarts = 3;
        });
        assert_eq!(h.down(), vec!["b".to_string()]);
        assert_eq!(h.tasks()["b"].restarts, 3);
    }
}
