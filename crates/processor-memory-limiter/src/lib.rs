//! The `memory_limiter` processor: while the collector's memory is above the
//! soft limit (`limit - spike_limit`), data is refused with a retryable
//! error, so the receiver answers 503 / Unavailable with `Retry-After` and
//! the senders keep their data until the collector has room again.
//!
//! Memory is the process's resident set size (`VmRSS`), sampled every
//! `check_interval`; percentages are of the cgroup limit when one is set,
//! else of the machine's memory.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentError, CreateSettings, Factory, Host, Lifecycle, Processor, ProcessorFactory,
};
use otelcol_core::config::{decode, duration, ConfigError, RawConfig};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::pdata::{Logs, Metrics, Payload, Traces};
use otelcol_core::task::Periodic;
use otelcol_core::telemetry::{Counter, Gauge};
use otelcol_core::{Signal, Stability};
use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;

/// `processors.memory_limiter`, with the Go processor's keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryLimiterConfig {
    /// How often memory is measured (required).
    #[serde(with = "duration")]
    pub check_interval: Duration,
    /// Hard limit in MiB.
    pub limit_mib: u64,
    /// Headroom below the hard limit, in MiB (default 20% of the limit).
    pub spike_limit_mib: u64,
    /// Hard limit as a percentage of available memory (instead of `limit_mib`).
    pub limit_percentage: u64,
    /// Headroom as a percentage of available memory.
    pub spike_limit_percentage: u64,
}

impl MemoryLimiterConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.check_interval.is_zero() {
            return Err(ConfigError::invalid("check_interval", "must be above 0"));
        }
        if self.limit_mib == 0 && self.limit_percentage == 0 {
            return Err(ConfigError::invalid(
                "limit_mib",
                "set limit_mib or limit_percentage",
            ));
        }
        if self.limit_mib > 0 && self.spike_limit_mib >= self.limit_mib {
            return Err(ConfigError::invalid(
                "spike_limit_mib",
                "must be smaller than limit_mib",
            ));
        }
        if self.limit_percentage > 100
            || self.spike_limit_percentage >= self.limit_percentage.max(1)
                && self.limit_percentage > 0
        {
            return Err(ConfigError::invalid(
                "limit_percentage",
                "must be at most 100, and spike_limit_percentage smaller than it",
            ));
        }
        Ok(())
    }

    /// The (soft, hard) limits in bytes, given the memory available.
    pub fn limits(&self, available: u64) -> (u64, u64) {
        if self.limit_mib > 0 {
            let hard = self.limit_mib * MIB;
            let spike = if self.spike_limit_mib > 0 {
                self.spike_limit_mib * MIB
            } else {
                hard / 5
            };
            (hard - spike, hard)
        } else {
            let hard = available / 100 * self.limit_percentage;
            let spike = available / 100 * self.spike_limit_percentage;
            (hard.saturating_sub(spike), hard)
        }
    }
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn proc_field_kib(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The collector's resident memory in bytes.
pub fn resident_bytes() -> Option<u64> {
    proc_field_kib("/proc/self/status", "VmRSS:").map(|k| k * 1024)
}

/// Memory available to the collector: the cgroup limit, else the machine's.
pub fn available_bytes() -> Option<u64> {
    let cgroup = read_number("/sys/fs/cgroup/memory.max")
        .or_else(|| read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .filter(|v| *v < (1 << 60));
    cgroup.or_else(|| proc_field_kib("/proc/meminfo", "MemTotal:").map(|k| k * 1024))
}

struct Shared {
    id: String,
    config: MemoryLimiterConfig,
    refusing: AtomicBool,
    refused: Counter,
    usage: Gauge,
}

impl Shared {
    fn check(&self) {
        let (Some(used), Some(available)) = (resident_bytes(), available_bytes()) else {
            return;
        };
        let (soft, hard) = self.config.limits(available);
        self.usage.set(used as i64);
        let over = used > soft;
        let was = self.refusing.swap(over, Ordering::AcqRel);
        match (was, over) {
            (false, true) => {
                tracing::warn!(processor = %self.id, used_mib = used / MIB, soft_limit_mib = soft / MIB, hard_limit_mib = hard / MIB, "memory above the soft limit: refusing data")
            }
            (true, false) => {
                tracing::info!(processor = %self.id, used_mib = used / MIB, "memory below the soft limit again: accepting data")
            }
            _ => {}
        }
    }
}

/// The running `memory_limiter` for one signal.
pub struct MemoryLimiter<T> {
    shared: Arc<Shared>,
    next: Arc<dyn Consumer<T>>,
    ticker: Periodic,
    _signal: PhantomData<fn(T)>,
}

#[async_trait]
impl<T: Payload> Consumer<T> for MemoryLimiter<T> {
    async fn consume(&self, batch: Batch<T>) -> Result<(), ConsumerError> {
        if self.shared.refusing.load(Ordering::Acquire) {
            self.shared.refused.add(batch.data.item_count() as u64);
            return Err(ConsumerError::Retryable {
                message: "data refused due to high memory usage".into(),
                retry_after: Some(
                    self.shared
                        .config
                        .check_interval
                        .max(Duration::from_secs(1)),
                ),
            });
        }
        self.next.consume(batch).await
    }
}

#[async_trait]
impl<T: Payload> Lifecycle for MemoryLimiter<T> {
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        self.shared.check();
        let shared = self.shared.clone();
        self.ticker
            .start(self.shared.config.check_interval, move || {
                let shared = shared.clone();
                async move { shared.check() }
            });
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        self.ticker.stop().await;
        Ok(())
    }
}

/// The factory for type `memory_limiter`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryLimiterFactory;

impl Factory for MemoryLimiterFactory {
    fn type_name(&self) -> &'static str {
        "memory_limiter"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<MemoryLimiterConfig>(config)?.validate()
    }
}

fn build<T: Payload>(
    settings: CreateSettings,
    raw: &RawConfig,
    next: Arc<dyn Consumer<T>>,
) -> Result<Arc<MemoryLimiter<T>>, ComponentError> {
    let config: MemoryLimiterConfig = decode(raw)?;
    config.validate()?;
    let id = settings.id.to_string();
    let name = match T::SIGNAL {
        Signal::Metrics => "otelcol_processor_refused_metric_points",
        Signal::Logs => "otelcol_processor_refused_log_records",
        Signal::Traces => "otelcol_processor_refused_spans",
    };
    Ok(Arc::new(MemoryLimiter {
        shared: Arc::new(Shared {
            refused: settings.metrics.counter(
                name,
                "Items refused by the memory limiter.",
                &[("processor", &id)],
            ),
            usage: settings.metrics.gauge(
                "otelcol_process_memory_rss",
                "Resident memory of the collector in bytes.",
                &[],
            ),
            id,
            config,
            refusing: AtomicBool::new(false),
        }),
        next,
        ticker: Periodic::default(),
        _signal: PhantomData,
    }))
}

impl ProcessorFactory for MemoryLimiterFactory {
    fn create_metrics(
        &self,
        s: CreateSettings,
        c: &RawConfig,
        n: Arc<dyn Consumer<Metrics>>,
    ) -> Result<Arc<dyn Processor<Metrics>>, ComponentError> {
        Ok(build(s, c, n)?)
    }
    fn create_logs(
        &self,
        s: CreateSettings,
        c: &RawConfig,
        n: Arc<dyn Consumer<Logs>>,
    ) -> Result<Arc<dyn Processor<Logs>>, ComponentError> {
        Ok(build(s, c, n)?)
    }
    fn create_traces(
        &self,
        s: CreateSettings,
        c: &RawConfig,
        n: Arc<dyn Consumer<Traces>>,
    ) -> Result<Arc<dyn Processor<Traces>>, ComponentError> {
        Ok(build(s, c, n)?)
    }
}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.processor(MemoryLimiterFactory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_config_checks() {
        let c = MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit_mib: 500,
            ..Default::default()
        };
        assert_eq!(c.limits(0), (400 * MIB, 500 * MIB), "spike defaults to 20%");
        let c = MemoryLimiterConfig {
            spike_limit_mib: 100,
            limit_mib: 400,
            ..c
        };
        assert_eq!(c.limits(0), (300 * MIB, 400 * MIB));
        let p = MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit_percentage: 80,
            spike_limit_percentage: 20,
            ..Default::default()
        };
        p.validate().unwrap();
        assert_eq!(p.limits(1000 * MIB), (600 * MIB, 800 * MIB));
        let bad = MemoryLimiterConfig {
            check_interval: Duration::ZERO,
            ..p.clone()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "check_interval: must be above 0"
        );
        let bad = MemoryLimiterConfig {
            limit_mib: 100,
            spike_limit_mib: 100,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(resident_bytes().unwrap() > MIB);
        assert!(available_bytes().unwrap() > resident_bytes().unwrap());
    }
}
