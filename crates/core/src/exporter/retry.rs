//! `retry_on_failure` and `timeout` around one [`Push`].

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::{Push, Request, RetryConfig};
use crate::consumer::ConsumerError;
use crate::pdata::Batchable;

/// How sending one request ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Sent,
    /// Refused permanently (the `Push` logged why).
    Refused(ConsumerError),
    /// Still failing when the retry budget ran out (or retries are off).
    GaveUp {
        attempts: u32,
        elapsed: Duration,
        last: ConsumerError,
    },
}

/// Retries with exponential backoff and jitter; each attempt bounded by `timeout`.
pub(crate) struct Retrier {
    config: RetryConfig,
    timeout: Duration,
    seed: Mutex<u64>,
}

impl Retrier {
    pub fn new(config: RetryConfig, timeout: Duration) -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Self {
            config,
            timeout,
            seed: Mutex::new(seed),
        }
    }

    /// A number in `[0, 1)` (xorshift: jitter needs spread, not secrecy).
    fn unit(&self) -> f64 {
        let mut s = self.seed.lock().unwrap_or_else(PoisonError::into_inner);
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 11) as f64 / (1u64 << 53) as f64
    }

    async fn attempt<T: Batchable, P: Push<T>>(
        &self,
        push: &P,
        request: &Request<T>,
    ) -> Result<(), ConsumerError> {
        if self.timeout.is_zero() {
            return push.push(request).await;
        }
        match tokio::time::timeout(self.timeout, push.push(request)).await {
            Ok(result) => result,
            Err(_) => Err(ConsumerError::retryable(format!(
                "no answer within the timeout of {:?}",
                self.timeout
            ))),
        }
    }

    /// Sends `request` until it is sent, refused for good, or the retry
    /// budget runs out; with `limited` false the budget never runs out
    /// (the caller stops the task to end it). `log` names the exporter.
    pub async fn send<T: Batchable, P: Push<T>>(
        &self,
        push: &P,
        request: &Request<T>,
        limited: bool,
        exporter: &str,
    ) -> Outcome {
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            let error = match self.attempt(push, request).await {
                Ok(()) => return Outcome::Sent,
                Err(e @ ConsumerError::Permanent { .. }) => return Outcome::Refused(e),
                Err(e) => e,
            };
            let backoff = self.config.jittered(attempts, self.unit());
            attempts += 1;
            let wait = match &error {
                ConsumerError::Retryable {
                    retry_after: Some(after),
                    ..
                } => (*after).max(backoff),
                _ => backoff,
            };
            let budget = self.config.max_elapsed_time;
            let out_of_time = limited && !budget.is_zero() && started.elapsed() + wait > budget;
            if !self.config.enabled || out_of_time {
                return Outcome::GaveUp {
                    attempts,
                    elapsed: started.elapsed(),
                    last: error,
                };
            }
            tracing::warn!(
                exporter,
                destination = %push.destination(),
                items = request.items,
                attempt = attempts,
                error = %error,
                wait_ms = wait.as_millis() as u64,
                "send failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}
