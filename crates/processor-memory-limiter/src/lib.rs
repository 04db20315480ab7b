//! The `memory_limiter` processor: while the collector's memory is above the
//! soft limit (`limit - spike_limit`), data is refused with a retryable
//! error, so the receiver answers 503 / Unavailable with `Retry-After` and
//! the senders keep their data until the collector has room again.
//!
//! Memory is the **live heap** (bytes allocated and not yet freed), read
//! from [`otelcol_core::memory`]'s counting allocator, which the binary
//! installs: on every batch (an O(1) read), and every `check_interval` for
//! the logs and gauges. The Go limiter reads the heap in use for the same
//! reason: the resident set stays high after a burst, because the allocator
//! keeps freed pages, and a limiter reading it would go on refusing long
//! after the memory is free. At each check, when the resident set exceeds
//! the live heap by more than [`TRIM_SLACK`] (or an eighth of the limit),
//! the limiter asks the allocator to give the free pages back (glibc
//! `malloc_trim`, at most every [`TRIM_EVERY`]), so the resident set follows
//! the heap down too. A program that does not install the counting
//! allocator gets the resident set, sampled every `check_interval`.
//!
//! Percentages are of the cgroup limit when one is set, else of the
//! machine's memory.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentError, CreateSettings, Factory, Host, Lifecycle, NoEffectKey, Processor,
    ProcessorFactory,
};
use otelcol_core::config::{decode, duration, ConfigError, RawConfig};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::memory::{live_heap_bytes, release_free_memory, resident_bytes};
use otelcol_core::pdata::{Logs, Metrics, Payload, Traces};
use otelcol_core::task::Periodic;
use otelcol_core::telemetry::{Counter, Gauge};
use otelcol_core::{Signal, Stability};
use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;

/// Free memory the allocator may keep (resident set above the live heap)
/// before the limiter asks it to give pages back.
pub const TRIM_SLACK: u64 = 64 * MIB;

/// The shortest time between two requests to give memory back.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

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
    /// Go: the shortest time between two forced garbage collections above
    /// the soft limit. Accepted with a start-up warning; no effect.
    pub min_gc_interval_when_soft_limited: Option<String>,
    /// As `min_gc_interval_when_soft_limited`, above the hard limit.
    pub min_gc_interval_when_hard_limited: Option<String>,
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
    /// The soft limit in bytes, set at each check (0 before the first).
    soft: AtomicU64,
    last_trim: Mutex<Option<Instant>>,
    refused: Counter,
    rss: Gauge,
    heap: Gauge,
}

impl Shared {
    /// Whether memory is above the soft limit now: the live heap when it is
    /// counted, else what the last check saw of the resident set.
    fn over(&self) -> bool {
        match live_heap_bytes() {
            Some(heap) => {
                let soft = self.soft.load(Ordering::Relaxed);
                soft > 0 && heap > soft
            }
            None => self.refusing.load(Ordering::Acquire),
        }
    }

    fn check(&self) {
        let Some(available) = available_bytes() else {
            return;
        };
        let (soft, hard) = self.config.limits(available);
        self.soft.store(soft, Ordering::Relaxed);
        let rss = resident_bytes();
        let heap = live_heap_bytes();
        if let Some(rss) = rss {
            self.rss.set(rss as i64);
        }
        if let Some(heap) = heap {
            self.heap.set(heap as i64);
        }
        let Some(used) = heap.or(rss) else {
            return;
        };
        let over = used > soft;
        let was = self.refusing.swap(over, Ordering::AcqRel);
        let measure = if heap.is_some() {
            "live heap"
        } else {
            "resident set"
        };
        match (was, over) {
            (false, true) => {
                tracing::warn!(processor = %self.id, measure, used_mib = used / MIB, soft_limit_mib = soft / MIB, hard_limit_mib = hard / MIB, "memory above the soft limit: refusing data")
            }
            (true, false) => {
                tracing::info!(processor = %self.id, measure, used_mib = used / MIB, "memory below the soft limit again: accepting data")
            }
            _ => {}
        }
        if let (Some(heap), Some(rss)) = (heap, rss) {
            self.give_back(heap, rss, hard);
        }
    }

    /// After a burst the allocator keeps the freed pages: ask for them to go
    /// back to the system when they are many, at most every [`TRIM_EVERY`].
    fn give_back(&self, heap: u64, rss: u64, hard: u64) {
        if rss.saturating_sub(heap) <= TRIM_SLACK.max(hard / 8) {
            return;
        }
        let mut last = self
            .last_trim
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < TRIM_EVERY) {
            return;
        }
        *last = Some(now);
        drop(last);
        if release_free_memory() {
            let after = resident_bytes().unwrap_or(rss);
            tracing::debug!(processor = %self.id, heap_mib = heap / MIB, rss_before_mib = rss / MIB, rss_after_mib = after / MIB, "gave free memory back to the system");
            self.rss.set(after as i64);
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
        if self.shared.over() {
            self.shared.refused.add(batch.items() as u64);
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

    /// Batches go on unchanged: the next consumer decides.
    fn reads_received(&self) -> bool {
        self.next.reads_received()
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
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        const WHY: &str = "there is no garbage collector to force; above the soft limit the allocator is asked to return free memory instead (at most every 5 s)";
        vec![
            NoEffectKey::new("min_gc_interval_when_soft_limited", WHY),
            NoEffectKey::new("min_gc_interval_when_hard_limited", WHY),
        ]
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
            rss: settings.metrics.gauge(
                "otelcol_process_memory_rss",
                "Resident memory of the collector in bytes.",
                &[],
            ),
            heap: settings.metrics.gauge(
                "otelcol_process_runtime_heap_alloc_bytes",
                "Bytes allocated on the heap and not yet freed (what the limit compares).",
                &[],
            ),
            id,
            config,
            refusing: AtomicBool::new(false),
            soft: AtomicU64::new(0),
            last_trim: Mutex::new(None),
        }),
        next,
        ticker: Periodic::default(),
        _signal: PhantomData,
    }))
}

impl ProcessorFactory for MemoryLimiterFactory {
    /// It passes a batch on as it came, or refuses it.
    fn keeps_data(&self) -> bool {
        true
    }
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
