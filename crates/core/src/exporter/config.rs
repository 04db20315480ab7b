//! The Go exporterhelper's config blocks: `sending_queue`,
//! `retry_on_failure` (and `timeout`, a plain duration on each exporter).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{duration, ConfigError};

/// `sending_queue`: requests wait here for `num_consumers` senders.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue at all; without it the upstream waits for each send and gets
    /// its result.
    pub enabled: bool,
    /// Concurrent senders.
    pub num_consumers: usize,
    /// Capacity, in units of `sizer`. A full queue refuses retryably
    /// (the receiver answers 503 / `UNAVAILABLE`), or waits with
    /// `block_on_overflow`.
    pub queue_size: u64,
    /// What `queue_size` counts: `requests` (Go default), `items` or `bytes`.
    pub sizer: Sizer,
    /// Wait for room instead of refusing when the queue is full.
    pub block_on_overflow: bool,
    /// The older name of `block_on_overflow`.
    pub blocking: bool,
    /// The caller waits until its request was sent (or failed for good),
    /// and gets that result.
    pub wait_for_result: bool,
    /// A storage extension id (`file_storage`, `file_storage/name`): the
    /// queue lives there and survives restarts and crashes.
    pub storage: Option<String>,
    /// Splitting of requests before they are queued.
    pub batch: Option<QueueBatchConfig>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            sizer: Sizer::Requests,
            block_on_overflow: false,
            blocking: false,
            wait_for_result: false,
            storage: None,
            batch: None,
        }
    }
}

/// What a size counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sizer {
    /// Requests (batches as they arrived).
    #[default]
    Requests,
    /// Items: data points, log records or spans.
    Items,
    /// Bytes of the protobuf encoding.
    Bytes,
}

impl Sizer {
    /// The units of a request of `items` items and `bytes` protobuf bytes.
    pub fn units(self, items: u64, bytes: u64) -> u64 {
        match self {
            Sizer::Requests => 1,
            Sizer::Items => items,
            Sizer::Bytes => bytes,
        }
    }
}

/// `sending_queue.batch`.
///
/// Here `max_size` splits each request before it is queued (every part
/// keeps a stable idempotency key of its own). Requests are not merged in
/// the queue: `min_size` and `flush_timeout` are accepted with a start-up
/// warning, since merging after the fact would change which requests share
/// an idempotency key on redelivery. The `batch` processor merges, before
/// the exporter.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueBatchConfig {
    /// Accepted, no effect here (see above).
    #[serde(with = "duration")]
    pub flush_timeout: Duration,
    /// Accepted, no effect here (see above).
    pub min_size: u64,
    /// Largest part, in units of `sizer` (0: no limit; `requests` cannot split).
    pub max_size: u64,
    /// What `min_size` and `max_size` count (default `items`).
    pub sizer: Option<Sizer>,
}

impl QueueBatchConfig {
    /// The keys accepted without effect, for an exporter factory's
    /// `no_effect_keys`.
    pub fn no_effect_keys() -> Vec<crate::component::NoEffectKey> {
        const WHY: &str = "requests are not merged in the sending queue (merging after the fact would change which data a resend's idempotency key covers); the batch processor merges before the exporter";
        vec![
            crate::component::NoEffectKey::new("sending_queue.batch.flush_timeout", WHY),
            crate::component::NoEffectKey::new("sending_queue.batch.min_size", WHY),
        ]
    }
}

impl Default for QueueBatchConfig {
    fn default() -> Self {
        Self {
            flush_timeout: Duration::from_millis(200),
            min_size: 8192,
            max_size: 0,
            sizer: None,
        }
    }
}

/// `retry_on_failure`: exponential backoff with jitter.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retry at all.
    pub enabled: bool,
    /// First wait.
    #[serde(with = "duration")]
    pub initial_interval: Duration,
    /// Jitter: a wait `w` is drawn from `[w(1-r), w(1+r)]`.
    pub randomization_factor: f64,
    /// Growth of the wait per attempt.
    pub multiplier: f64,
    /// Longest wait.
    #[serde(with = "duration")]
    pub max_interval: Duration,
    /// Give up on a request after this long; 0 means never, as in Go.
    #[serde(with = "duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

impl QueueConfig {
    /// Whether a full queue waits for room.
    pub fn blocks(&self) -> bool {
        self.block_on_overflow || self.blocking
    }

    /// Checks what serde cannot; paths are relative to the exporter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.num_consumers == 0 {
            return Err(ConfigError::invalid(
                "sending_queue.num_consumers",
                "must be above 0",
            ));
        }
        if self.queue_size == 0 {
            return Err(ConfigError::invalid(
                "sending_queue.queue_size",
                "must be above 0",
            ));
        }
        if let Some(s) = &self.storage {
            s.parse::<crate::component::ComponentId>()
                .map_err(|e| ConfigError::invalid("sending_queue.storage", e.to_string()))?;
        }
        if let Some(b) = &self.batch {
            if b.max_size > 0 && b.sizer == Some(Sizer::Requests) {
                return Err(ConfigError::invalid(
                    "sending_queue.batch.max_size",
                    "cannot split by `requests`; use sizer `items` or `bytes`",
                ));
            }
        }
        Ok(())
    }
}

impl RetryConfig {
    /// Checks what serde cannot; paths are relative to the exporter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.multiplier < 1.0 || !self.multiplier.is_finite() {
            return Err(ConfigError::invalid(
                "retry_on_failure.multiplier",
                "must be a number >= 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err(ConfigError::invalid(
                "retry_on_failure.randomization_factor",
                "must be within [0, 1]",
            ));
        }
        if self.enabled && self.initial_interval.is_zero() {
            return Err(ConfigError::invalid(
                "retry_on_failure.initial_interval",
                "must be above 0",
            ));
        }
        Ok(())
    }

    /// The wait before attempt `attempt + 1` (0-based), before jitter.
    pub fn interval(&self, attempt: u32) -> Duration {
        let base =
            self.initial_interval.as_secs_f64() * self.multiplier.powi(attempt.min(1000) as i32);
        Duration::from_secs_f64(base.min(self.max_interval.as_secs_f64()).max(0.0))
    }

    /// `interval` spread by the jitter factor, `unit` in `[0, 1)`.
    pub fn jittered(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.interval(attempt).as_secs_f64();
        let spread = base * self.randomization_factor;
        Duration::from_secs_f64((base - spread + 2.0 * spread * unit).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_defaults_and_backoff() {
        let q: QueueConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(
            (q.enabled, q.num_consumers, q.queue_size, q.sizer),
            (true, 10, 1000, Sizer::Requests)
        );
        let r: RetryConfig = serde_yaml::from_str("max_elapsed_time: 0s").unwrap();
        assert_eq!(r.max_elapsed_time, Duration::ZERO);
        assert_eq!(r.interval(0), Duration::from_secs(5));
        assert_eq!(r.interval(1), Duration::from_secs_f64(7.5));
        assert_eq!(r.interval(50), Duration::from_secs(30));
        assert_eq!(r.jittered(0, 0.0), Duration::from_secs_f64(2.5));
        assert_eq!(r.jittered(0, 0.5), Duration::from_secs(5));
    }

    #[test]
    fn validation_names_the_key() {
        let q: QueueConfig = serde_yaml::from_str("num_consumers: 0").unwrap();
        assert!(q
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sending_queue.num_consumers"));
        let q: QueueConfig =
            serde_yaml::from_str("batch: {sizer: requests, max_size: 10}").unwrap();
        assert!(q.validate().is_err());
        let r: RetryConfig = serde_yaml::from_str("multiplier: 0.5").unwrap();
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("retry_on_failure.multiplier"));
        let e = serde_yaml::from_str::<QueueConfig>("storage_x: a").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
