//! A periodic background task that components start and stop (emission
//! ticks, timeouts, memory checks).

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Calls a function every `period` on its own task until [`Periodic::stop`].
#[derive(Debug, Default)]
pub struct Periodic {
    running: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

impl Periodic {
    /// Starts calling `tick` every `period`, the first time one period from
    /// now. A tick that overruns delays the next one rather than bunching.
    pub fn start<F, Fut>(&self, period: Duration, mut tick: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => tick().await,
                    _ = stopped.changed() => break,
                }
            }
        });
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some((stop, task));
    }

    /// Stops the task and waits for a tick in progress to finish.
    pub async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((stop, task)) = running {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn ticks_every_period_until_stopped() {
        let n = Arc::new(AtomicU32::new(0));
        let p = Periodic::default();
        let counter = n.clone();
        p.start(Duration::from_secs(1), move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_millis(3500)).await;
        p.stop().await;
        assert_eq!(n.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(n.load(Ordering::SeqCst), 3, "no tick after stop");
    }
}
