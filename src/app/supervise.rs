//! Supervision of the daemon's long-running tasks: a task that panics is restarted after a
//! growing pause, counted (`custodian_task_restarts_total`) and shown as down in
//! [`Health`](crate::core::health::Health) until it runs again.

use crate::core::health::Health;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The pause before restart number `n` (1-based): 100 ms doubling, at most 30 s.
pub fn restart_delay(n: u64) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1u32 << n.saturating_sub(1).min(9))
        .min(Duration::from_secs(30))
}

/// Runs the task made by `make` until it returns (its own shutdown) or `shutdown` is
/// cancelled; a panic restarts it. `kind` and `id` name it in the metric's labels (e.g.
/// `mro_sender`, `MRO-0042`: never donor data).
pub async fn supervise<F, Fut>(
    kind: &'static str,
    id: String,
    health: Arc<Health>,
    shutdown: CancellationToken,
    make: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = format!("{kind} {id}");
    let mut restarts = 0u64;
    loop {
        health.update(&name, |t| t.up = true);
        let outcome = tokio::spawn(make()).await;
        match outcome {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                restarts += 1;
                health.update(&name, |t| {
                    t.up = false;
                    t.restarts += 1;
                });
                let delay = restart_delay(restarts);
                crate::core::telemetry::emit(crate::app::events::TaskRestarted {
                    kind,
                    id: &id,
                    name: &name,
                    restarts,
                    delay,
                });
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                info!(component = "health", task = %name, "task restarted");
            }
            // Cancelled from outside (runtime shutting down).
            Err(_) => return,
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn restart_delay_grows_and_is_bounded() {
        assert_eq!(restart_delay(1), Duration::from_millis(100));
        assert_eq!(restart_delay(2), Duration::from_millis(200));
        assert_eq!(restart_delay(4), Duration::from_millis(800));
        assert_eq!(restart_delay(1000), Duration::from_secs(30));
    }

    /// A task that panics is restarted, counted, and shown as down until it is.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_and_shown() {
        let health = Health::new();
        let runs = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        let (h, r, s) = (health.clone(), runs.clone(), stop.clone());
        let sup = tokio::spawn(async move {
            supervise("mro_sender", "MRO-1".into(), h, s.clone(), move || {
                let r = r.clone();
                let s = s.clone();
                async move {
                    let n = r.fetch_add(1, Ordering::SeqCst);
                    if n < 2 {
                        panic!("boom {n}");
                    }
                    s.cancelled().await;
                }
            })
            .await
        });
        // Let the first run panic: the task is down, restart pending.
        for _ in 0..50 {
            tokio::task::yield_now().await;
            if health
                .tasks()
                .get("mro_sender MRO-1")
                .is_some_and(|t| !t.up)
            {
                break;
            }
        }
        assert_eq!(health.down(), vec!["mro_sender MRO-1".to_string()]);
        // Paused clock: the restart pauses (100 ms, then 200 ms) pass at once.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let t = &health.tasks()["mro_sender MRO-1"];
        assert!(t.up);
        assert_eq!(t.restarts, 2);
        assert!(health.down().is_empty());
        stop.cancel();
        sup.await.unwrap();
    }

    /// A task that returns is not restarted.
    #[tokio::test(start_paused = true)]
    async fn a_task_that_returns_ends() {
        let health = Health::new();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        supervise(
            "mro_sender",
            "MRO-2".into(),
            health.clone(),
            CancellationToken::new(),
            move || {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                }
            },
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(health.tasks()["mro_sender MRO-2"].restarts, 0);
    }
}
