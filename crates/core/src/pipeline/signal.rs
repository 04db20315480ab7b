//! Per-signal dispatch, so the builder is written once for all three signals.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::component::{
    ComponentError, ComponentId, CreateSettings, Exporter, ExporterFactory, Processor,
    ProcessorFactory, SignalConsumers,
};
use crate::config::RawConfig;
use crate::consumer::Consumer;
use crate::pdata::{Logs, Metrics, Payload, Traces};

/// What the builder keeps per signal while it builds pipelines.
pub(crate) struct Built<T> {
    /// Exporters built so far, shared by the signal's pipelines.
    pub exporters: BTreeMap<ComponentId, Arc<dyn Consumer<T>>>,
    /// Pipeline heads each receiver or connector must feed, by its id.
    pub heads: BTreeMap<ComponentId, Vec<Arc<dyn Consumer<T>>>>,
}

impl<T> Default for Built<T> {
    fn default() -> Self {
        Self {
            exporters: BTreeMap::new(),
            heads: BTreeMap::new(),
        }
    }
}

/// [`Built`] for all three signals.
#[derive(Default)]
pub(crate) struct AllBuilt {
    metrics: Built<Metrics>,
    logs: Built<Logs>,
    traces: Built<Traces>,
}

/// Picks the factory method and consumer slot of one signal.
pub(crate) trait SignalOps: Payload + Sized {
    fn built(all: &mut AllBuilt) -> &mut Built<Self>;
    fn create_exporter(
        f: &dyn ExporterFactory,
        s: CreateSettings,
        c: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Self>>, ComponentError>;
    fn create_processor(
        f: &dyn ProcessorFactory,
        s: CreateSettings,
        c: &RawConfig,
        next: Arc<dyn Consumer<Self>>,
    ) -> Result<Arc<dyn Processor<Self>>, ComponentError>;
    fn slot(c: &mut SignalConsumers) -> &mut Option<Arc<dyn Consumer<Self>>>;
}

macro_rules! signal_ops {
    ($t:ty, $exp:ident, $proc:ident, $field:ident) => {
        impl SignalOps for $t {
            fn built(all: &mut AllBuilt) -> &mut Built<Self> {
                &mut all.$field
            }
            fn create_exporter(
                f: &dyn ExporterFactory,
                s: CreateSettings,
                c: &RawConfig,
            ) -> Result<Arc<dyn Exporter<Self>>, ComponentError> {
                f.$exp(s, c)
            }
            fn create_processor(
                f: &dyn ProcessorFactory,
                s: CreateSettings,
                c: &RawConfig,
                next: Arc<dyn Consumer<Self>>,
            ) -> Result<Arc<dyn Processor<Self>>, ComponentError> {
                f.$proc(s, c, next)
            }
            fn slot(c: &mut SignalConsumers) -> &mut Option<Arc<dyn Consumer<Self>>> {
                &mut c.$field
            }
        }
    };
}

signal_ops!(Metrics, create_metrics, create_metrics, metrics);
signal_ops!(Logs, create_logs, create_logs, logs);
signal_ops!(Traces, create_traces, create_traces, traces);
