//! [`QueuedExporter`]: a [`Push`] with split, queue, retry, timeout and counters.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::queue::{Admit, Entry, Queue, Refusal};
use super::retry::{Outcome, Retrier};
use super::stage::{MergeSettings, Stage, Taken};
use super::{new_request_id, Push, QueueConfig, Request, RetryConfig, Sizer};
use crate::component::{ComponentError, ComponentId, CreateSettings, Host, Kind, Lifecycle};
use crate::consumer::{Batch, Consumer, ConsumerError, PermanentKind};
use crate::pdata::Batchable;
use crate::storage::StorageOp;
use crate::telemetry::{Counter, Gauge, MetricsRegistry};
use crate::Signal;

/// The exporterhelper keys of one exporter, as its config holds them.
#[derive(Clone, Debug)]
pub struct ExporterSettings {
    /// `sending_queue`.
    pub sending_queue: QueueConfig,
    /// `retry_on_failure`.
    pub retry_on_failure: RetryConfig,
    /// `timeout`: the bound of one attempt (0: none).
    pub timeout: Duration,
    /// How long shutdown lets the queue drain (not a Go key; 30 s).
    pub drain_timeout: Duration,
    /// Merge requests before queueing them (object storage: few large
    /// objects). Used when the queue is on and the caller does not wait
    /// for the result (`wait_for_result` keeps each request apart).
    pub merge: Option<MergeSettings>,
}

impl ExporterSettings {
    /// The settings with the default drain time.
    pub fn new(
        sending_queue: QueueConfig,
        retry_on_failure: RetryConfig,
        timeout: Duration,
    ) -> Self {
        Self {
            sending_queue,
            retry_on_failure,
            timeout,
            drain_timeout: Duration::from_secs(30),
            merge: None,
        }
    }
}

/// The Go counters, in the units of this signal's items.
struct Counters {
    sent: Counter,
    send_failed: Counter,
    enqueue_failed: Counter,
    queue_size: Gauge,
    queue_capacity: Gauge,
}

impl Counters {
    fn new(m: &MetricsRegistry, id: &str, signal: Signal) -> Self {
        macro_rules! names {
            ($items:literal, $unit:literal) => {
                (
                    concat!("otelcol_exporter_sent_", $items),
                    concat!("otelcol_exporter_send_failed_", $items),
                    concat!("otelcol_exporter_enqueue_failed_", $items),
                    concat!("Items sent to the destination; unit: ", $unit, "."),
                    concat!("Items that could not be sent and were dropped (each drop is logged); unit: ", $unit, "."),
                    concat!("Items refused retryably because the sending queue was full or closed; unit: ", $unit, "."),
                )
            };
        }
        let (sent, failed, enqueue, sent_help, failed_help, enqueue_help) = match signal {
            Signal::Metrics => names!(
                "metric_points",
                "data points as this exporter sends them (after aggregation one per user total, not the raw points the receiver counts)"
            ),
            Signal::Logs => names!("log_records", "log records as this exporter sends them"),
            Signal::Traces => names!("spans", "spans as this exporter sends them"),
        };
        let l = [("exporter", id)];
        let q = [("exporter", id), ("data_type", signal.as_str())];
        Self {
            sent: m.counter(sent, sent_help, &l),
            send_failed: m.counter(failed, failed_help, &l),
            enqueue_failed: m.counter(enqueue, enqueue_help, &l),
            queue_size: m.gauge(
                "otelcol_exporter_queue_size",
                "Requests in the sending queue, waiting or being sent.",
                &q,
            ),
            queue_capacity: m.gauge(
                "otelcol_exporter_queue_capacity",
                "Capacity of the sending queue, in units of sending_queue.sizer.",
                &q,
            ),
        }
    }
}

struct Shared<T, P> {
    id: ComponentId,
    label: String,
    signal: Signal,
    push: P,
    retrier: Retrier,
    settings: ExporterSettings,
    counters: Counters,
    _t: std::marker::PhantomData<fn(T)>,
}

struct Running<T> {
    queue: Arc<Queue<T>>,
    workers: Vec<JoinHandle<()>>,
    stage: Option<(Arc<Stage<T>>, JoinHandle<()>)>,
}

/// An exporter for one signal: `P` sends, this does the rest.
pub struct QueuedExporter<T, P> {
    shared: Arc<Shared<T, P>>,
    running: Mutex<Option<Running<T>>>,
    /// The queue once started (kept after shutdown to refuse new requests).
    queue: Mutex<Option<Arc<Queue<T>>>>,
    /// The merge stage once started, when merging.
    stage: Mutex<Option<Arc<Stage<T>>>>,
}

impl<T: Batchable, P: Push<T>> QueuedExporter<T, P> {
    /// An exporter named by `settings.id` sending `signal` through `push`.
    pub fn new(
        settings: &CreateSettings,
        signal: Signal,
        exporter: ExporterSettings,
        push: P,
    ) -> Result<Self, ComponentError> {
        exporter.sending_queue.validate()?;
        exporter.retry_on_failure.validate()?;
        let label = settings.id.to_string();
        let counters = Counters::new(&settings.metrics, &label, signal);
        Ok(Self {
            shared: Arc::new(Shared {
                id: settings.id.clone(),
                label,
                signal,
                retrier: Retrier::new(exporter.retry_on_failure.clone(), exporter.timeout),
                push,
                settings: exporter,
                counters,
                _t: std::marker::PhantomData,
            }),
            running: Mutex::new(None),
            queue: Mutex::new(None),
            stage: Mutex::new(None),
        })
    }

    /// The [`Push`] inside.
    pub fn pusher(&self) -> &P {
        &self.shared.push
    }

    fn queue(&self) -> Option<Arc<Queue<T>>> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn stage(&self) -> Option<Arc<Stage<T>>> {
        self.stage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn units(sizer: Sizer, r: &Request<T>) -> u64 {
        sizer.units(r.items, r.data.encoded_len() as u64)
    }

    async fn send_inline(&self, parts: Vec<Request<T>>) -> Result<(), ConsumerError> {
        let s = &self.shared;
        let mut delivered = false;
        for part in parts {
            // Once a part was delivered, a retryable refusal would make the
            // caller send that part again: the rest retries until it is sent.
            match s.retrier.send(&s.push, &part, !delivered, &s.label).await {
                Outcome::Sent => {
                    s.counters.sent.add(part.items);
                    delivered = true;
                }
                Outcome::Refused(e) => {
                    s.counters.send_failed.add(part.items);
                    return Err(e);
                }
                Outcome::GaveUp { attempts, last, .. } => {
                    tracing::warn!(
                        exporter = %s.label,
                        destination = %s.push.destination(),
                        items = part.items,
                        attempts,
                        error = %last,
                        "giving up retrying a batch; handing the refusal back"
                    );
                    return Err(ConsumerError::Retryable {
                        message: format!(
                            "exporter {}: sending to {} failed after {attempts} attempts: {last}",
                            s.label,
                            s.push.destination()
                        ),
                        retry_after: None,
                    });
                }
            }
        }
        Ok(())
    }

    /// Merging: the request is acknowledged once staged (durably, with
    /// storage); the flusher queues it later.
    async fn stage_request(
        &self,
        stage: &Stage<T>,
        request: Request<T>,
    ) -> Result<(), ConsumerError> {
        let s = &self.shared;
        let units = Self::units(s.settings.sending_queue.sizer, &request);
        let token = request.token.filter(|_| s.push.keeps_tokens_apart());
        let items = request.items;
        let data = match stage.add(token.clone(), request.data, items, units).await {
            Ok(()) => return Ok(()),
            // Full before the flusher ran: flush here (the stage is at
            // least half full, so everything goes) and try once more.
            Err((Refusal::Full, data)) => match self.queue() {
                Some(queue) => {
                    s.flush(stage, &queue, false).await;
                    data
                }
                None => return Err(s.refuse(items, Refusal::Full)),
            },
            Err((refusal, _)) => return Err(s.refuse(items, refusal)),
        };
        match stage.add(token, data, items, units).await {
            Ok(()) => Ok(()),
            Err((refusal, _)) => Err(s.refuse(items, refusal)),
        }
    }

    async fn enqueue(&self, queue: &Queue<T>, parts: Vec<Request<T>>) -> Result<(), ConsumerError> {
        let s = &self.shared;
        let q = &s.settings.sending_queue;
        let items: u64 = parts.iter().map(|p| p.items).sum();
        let mut waiters = vec![];
        let entries = parts
            .into_iter()
            .map(|p| {
                let units = Self::units(q.sizer, &p);
                let waiter = q.wait_for_result.then(|| {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(rx);
                    tx
                });
                (p, units, waiter)
            })
            .collect();
        let admit = if q.blocks() {
            Admit::Block
        } else {
            Admit::Refuse
        };
        let refusal = match queue.push(entries, admit, vec![]).await {
            Ok(()) => {
                s.counters.queue_size.set(queue.len() as i64);
                for rx in waiters {
                    match rx.await {
                        Ok(result) => result?,
                        Err(_) => {
                            return Err(ConsumerError::retryable(format!(
                                "exporter {}: stopped before the request was sent",
                                s.label
                            )))
                        }
                    }
                }
                return Ok(());
            }
            Err(r) => r,
        };
        Err(s.refuse(items, refusal))
    }
}

#[async_trait]
impl<T: Batchable, P: Push<T>> Consumer<T> for QueuedExporter<T, P> {
    async fn consume(&self, batch: Batch<T>) -> Result<(), ConsumerError> {
        let s = &self.shared;
        let items = batch.data.item_count() as u64;
        if items == 0 {
            return Ok(());
        }
        let request = Request {
            token: batch.context.bearer_token().cloned(),
            idempotency_key: batch
                .context
                .idempotency_key
                .as_deref()
                .map_or_else(new_request_id, str::to_string),
            data: batch.data,
            items,
            partition: String::new(),
            flow: batch.context.flow.clone(),
        };
        if let Err(e) = s.push.check(&request) {
            if !e.is_retryable() {
                s.counters.send_failed.add(items);
            }
            return Err(e);
        }
        if let Some(stage) = self.stage() {
            return self.stage_request(&stage, request).await;
        }
        let (parts, too_big) = s.parts(request);
        for part in &too_big {
            s.drop_too_big(part);
            let (bytes, limit) = (part.data.encoded_len(), s.push.max_request_bytes());
            batch.context.rejected.add(part.items, || {
                format!("an item of {bytes} bytes is larger than the {limit}-byte request limit of exporter {}", s.label)
            });
        }
        if parts.is_empty() {
            return Err(ConsumerError::Permanent {
                message: format!(
                    "exporter {}: every item is larger than one request may be",
                    s.label
                ),
                kind: PermanentKind::InvalidData,
            });
        }
        if !s.settings.sending_queue.enabled {
            return self.send_inline(parts).await;
        }
        let Some(queue) = self.queue() else {
            s.counters.enqueue_failed.add(items);
            return Err(ConsumerError::retryable(format!(
                "exporter {} is not running",
                s.label
            )));
        };
        self.enqueue(&queue, parts).await
    }
}

impl<T: Batchable, P: Push<T>> Shared<T, P> {
    /// Counts and logs a retryable refusal of `items` items, with a retry hint.
    fn refuse(&self, items: u64, refusal: Refusal) -> ConsumerError {
        let why = match refusal {
            Refusal::Full => "the sending queue is full".to_string(),
            Refusal::Closed => "the exporter is shutting down".to_string(),
            Refusal::Storage(e) => {
                tracing::error!(exporter = %self.label, items, error = %e, "cannot write a request to the persistent queue; refusing it (the sender retries)");
                format!("the persistent queue cannot be written: {e}")
            }
        };
        self.counters.enqueue_failed.add(items);
        tracing::warn!(exporter = %self.label, items, "refusing a request: {why}");
        ConsumerError::Retryable {
            message: format!("exporter {}: {why}", self.label),
            retry_after: Some(
                self.settings
                    .retry_on_failure
                    .initial_interval
                    .min(Duration::from_secs(5)),
            ),
        }
    }

    /// Counts and logs a part that can never be sent: one item above the
    /// destination's request limit.
    fn drop_too_big(&self, part: &Request<T>) {
        self.counters.send_failed.add(part.items);
        tracing::error!(
            exporter = %self.label,
            items = part.items,
            bytes = part.data.encoded_len(),
            limit = self.push.max_request_bytes(),
            "dropping an item larger than the destination takes in one request"
        );
    }

    /// Queues what the stage holds when a threshold is reached (`force`:
    /// whatever it holds, whatever the queue's room: the last flush).
    async fn flush(&self, stage: &Stage<T>, queue: &Queue<T>, force: bool) {
        let _one = stage.flushing.lock().await;
        self.flush_locked(stage, queue, force).await;
    }

    /// [`Self::flush`] with the stage's flush lock held.
    async fn flush_locked(&self, stage: &Stage<T>, queue: &Queue<T>, force: bool) {
        let taken = stage.take_due(force);
        if taken.is_empty() {
            return;
        }
        let (parts, too_big) = self.merge(&taken);
        let sizer = self.settings.sending_queue.sizer;
        let n = parts.len();
        let entries = parts
            .into_iter()
            .map(|p| {
                let units = QueuedExporter::<T, P>::units(sizer, &p);
                (p, units, None)
            })
            .collect();
        let also = if stage.persistent() {
            taken
                .iter()
                .flat_map(|(_, b)| &b.entries)
                .map(|t| StorageOp::Delete(Stage::<T>::storage_key(t.seq)))
                .collect()
        } else {
            vec![]
        };
        let admit = if force { Admit::Force } else { Admit::Refuse };
        match queue.push(entries, admit, also).await {
            Ok(()) => {
                stage.queued(n);
                too_big.iter().for_each(|p| self.drop_too_big(p));
                self.counters.queue_size.set(queue.len() as i64);
            }
            Err(refusal) => {
                let items: u64 = taken.iter().map(|(_, b)| b.items).sum();
                let why = match refusal {
                    Refusal::Full => {
                        tracing::debug!(exporter = %self.label, items, "the sending queue is full; merged requests wait in the stage");
                        "the sending queue is full".to_string()
                    }
                    Refusal::Closed => "the exporter is shutting down".to_string(),
                    Refusal::Storage(e) => {
                        tracing::error!(exporter = %self.label, items, error = %e, "cannot move merged requests to the persistent queue; they stay staged and are tried again");
                        format!("the persistent queue cannot be written: {e}")
                    }
                };
                stage.put_back(taken, &why);
            }
        }
    }

    /// Merges each bucket of staged requests (one per token when the
    /// destination keeps tokens apart), then partitions and splits them,
    /// each part under a new key. The staged data is copied: it stays
    /// staged until the queue took the parts.
    fn merge(&self, taken: &Taken<T>) -> (Vec<Request<T>>, Vec<Request<T>>) {
        let (mut ok, mut too_big) = (vec![], vec![]);
        for (token, bucket) in taken {
            let mut data = T::default();
            for s in &bucket.entries {
                data.append(s.data.clone());
            }
            let token = token.clone();
            let request = Request {
                items: data.item_count() as u64,
                data,
                token,
                idempotency_key: new_request_id(),
                partition: String::new(),
                flow: None,
            };
            let (o, t) = self.parts(request);
            ok.extend(o);
            too_big.extend(t);
        }
        (ok, too_big)
    }

    /// Splits `request` by [`Push::partition`] and by size into the parts
    /// that are queued or sent, each with its own key; parts that can
    /// never be sent (one item above the destination's limit) are
    /// returned apart.
    fn parts(&self, request: Request<T>) -> (Vec<Request<T>>, Vec<Request<T>>) {
        let Request {
            data,
            token,
            idempotency_key,
            flow,
            ..
        } = request;
        let labelled = self.push.partition(data);
        let whole = labelled.len() == 1;
        let (mut ok, mut too_big) = (vec![], vec![]);
        for (partition, data) in labelled {
            let part = Request {
                items: data.item_count() as u64,
                data,
                token: token.clone(),
                // Each partition is a request of its own, under a key of
                // its own (object names stay UUIDv7s).
                idempotency_key: if whole {
                    idempotency_key.clone()
                } else {
                    new_request_id()
                },
                partition,
                flow: flow.clone(),
            };
            let (o, t) = self.split(part);
            ok.extend(o);
            too_big.extend(t);
        }
        (ok, too_big)
    }

    /// Splits `request` by size.
    fn split(&self, request: Request<T>) -> (Vec<Request<T>>, Vec<Request<T>>) {
        let q = &self.settings.sending_queue;
        let (mut max_items, mut max_bytes) = (0usize, self.push.max_request_bytes());
        if let Some(b) = q.batch.as_ref().filter(|b| b.max_size > 0) {
            let limit = usize::try_from(b.max_size).unwrap_or(usize::MAX);
            match b.sizer.unwrap_or(Sizer::Items) {
                Sizer::Items => max_items = limit,
                Sizer::Bytes => {
                    max_bytes = if max_bytes == 0 {
                        limit
                    } else {
                        max_bytes.min(limit)
                    }
                }
                Sizer::Requests => {}
            }
        }
        if (max_items == 0 || request.items as usize <= max_items)
            && (max_bytes == 0 || request.data.encoded_len() <= max_bytes)
        {
            return (vec![request], vec![]);
        }
        let Request {
            data,
            token,
            idempotency_key,
            partition,
            flow,
            ..
        } = request;
        let (mut ok, mut too_big) = (vec![], vec![]);
        for (n, data) in data.split(max_items, max_bytes).into_iter().enumerate() {
            let part = Request {
                items: data.item_count() as u64,
                data,
                token: token.clone(),
                idempotency_key: format!("{idempotency_key}-{n}"),
                partition: partition.clone(),
                flow: flow.clone(),
            };
            if max_bytes > 0 && part.data.encoded_len() > max_bytes {
                too_big.push(part);
            } else {
                ok.push(part);
            }
        }
        (ok, too_big)
    }

    /// Flushes the stage at each tick and whenever a size threshold is hit.
    async fn flusher(self: Arc<Self>, stage: Arc<Stage<T>>, queue: Arc<Queue<T>>) {
        let tick = stage.tick();
        loop {
            tokio::select! {
                _ = stage.due.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            self.flush(&stage, &queue, false).await;
        }
    }

    async fn work(self: Arc<Self>, queue: Arc<Queue<T>>) {
        while let Some(popped) = queue.pop().await {
            let Entry {
                id,
                request,
                waiter,
                ..
            } = match popped {
                Ok(entry) => entry,
                Err((items, why)) => {
                    self.counters.send_failed.add(items);
                    tracing::error!(exporter = %self.label, items, error = %why, "a queued request cannot be read back from the persistent queue; it is removed (its items are lost)");
                    self.counters.queue_size.set(queue.len() as i64);
                    continue;
                }
            };
            let result = match self
                .retrier
                .send(&self.push, &request, true, &self.label)
                .await
            {
                Outcome::Sent => {
                    self.counters.sent.add(request.items);
                    Ok(())
                }
                Outcome::Refused(e) => {
                    self.counters.send_failed.add(request.items);
                    Err(e)
                }
                Outcome::GaveUp {
                    attempts,
                    elapsed,
                    last,
                } => {
                    self.counters.send_failed.add(request.items);
                    tracing::error!(
                        exporter = %self.label,
                        destination = %self.push.destination(),
                        items = request.items,
                        attempts,
                        elapsed_s = elapsed.as_secs(),
                        idempotency_key = %request.idempotency_key,
                        error = %last,
                        "giving up on a request after retry_on_failure.max_elapsed_time; it is dropped (max_elapsed_time: 0 retries until it is sent)"
                    );
                    Err(ConsumerError::permanent(format!(
                        "gave up after {attempts} attempts: {last}"
                    )))
                }
            };
            if let Err(e) = queue.done(id).await {
                tracing::warn!(exporter = %self.label, error = %e, "a sent request could not be removed from the persistent queue; it is sent again after a restart, with the same idempotency key");
            }
            self.counters.queue_size.set(queue.len() as i64);
            if let Some(w) = waiter {
                let _ = w.send(result);
            }
        }
    }

    async fn open_storage(
        &self,
        host: &Host,
    ) -> Result<Option<Arc<dyn crate::storage::StorageClient>>, ComponentError> {
        let Some(name) = &self.settings.sending_queue.storage else {
            return Ok(None);
        };
        let storage_id: ComponentId = name.parse().map_err(|e: crate::component::IdError| {
            ComponentError::Failed(format!(
                "exporter {}: sending_queue.storage: {e}",
                self.label
            ))
        })?;
        let ext = host.storage(&storage_id).map_err(|e| {
            ComponentError::Failed(format!(
                "exporter {}: sending_queue.storage: {e}",
                self.label
            ))
        })?;
        let client = ext
            .client(Kind::Exporter, &self.id, self.signal.as_str())
            .map_err(|e| {
                ComponentError::Failed(format!("exporter {}: sending queue: {e}", self.label))
            })?;
        Ok(Some(client))
    }
}

impl<T, P> Drop for QueuedExporter<T, P> {
    /// Dropped without a shutdown (an embedding program, or a test playing
    /// a crash): the tasks stop where they are; a persistent queue keeps
    /// what they held.
    fn drop(&mut self) {
        let running = self
            .running
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(r) = running {
            r.workers.iter().for_each(JoinHandle::abort);
            if let Some((_, flusher)) = &r.stage {
                flusher.abort();
            }
        }
    }
}

#[async_trait]
impl<T: Batchable, P: Push<T>> Lifecycle for QueuedExporter<T, P> {
    async fn start(&self, host: &Host) -> Result<(), ComponentError> {
        let s = self.shared.clone();
        s.push.start(host).await?;
        let q = &s.settings.sending_queue;
        if !q.enabled {
            return Ok(());
        }
        let storage = s.open_storage(host).await?;
        let queue = Arc::new(Queue::new(q.queue_size, storage.clone()));
        let sizer = q.sizer;
        let (requests, items, bad) = queue
            .recover(|items, bytes| sizer.units(items, bytes))
            .await
            .map_err(|e| {
                ComponentError::Failed(format!("exporter {}: sending queue: {e}", s.label))
            })?;
        if requests > 0 {
            tracing::info!(exporter = %s.label, requests, items, "resuming the requests the persistent queue held at the last stop");
        }
        for (key, why) in &bad {
            tracing::error!(exporter = %s.label, key, error = %why, "a stored request cannot be read; it is removed (its items are lost)");
        }
        s.counters.queue_size.set(queue.len() as i64);
        s.counters
            .queue_capacity
            .set(i64::try_from(q.queue_size).unwrap_or(i64::MAX));
        let stage = match s.settings.merge.clone().filter(|_| !q.wait_for_result) {
            Some(merge) => {
                let stage = Arc::new(Stage::new(merge, q.queue_size, storage));
                let (requests, items, bad) = stage
                    .recover(|r| Self::units(sizer, r))
                    .await
                    .map_err(|e| {
                        ComponentError::Failed(format!("exporter {}: sending queue: {e}", s.label))
                    })?;
                if requests > 0 {
                    tracing::info!(exporter = %s.label, requests, items, "resuming the requests the persistent queue held unmerged at the last stop");
                }
                for (key, why) in &bad {
                    tracing::error!(exporter = %s.label, key, error = %why, "a stored request cannot be read; it is removed (its items are lost)");
                }
                let flusher = tokio::spawn(s.clone().flusher(stage.clone(), queue.clone()));
                Some((stage, flusher))
            }
            None => None,
        };
        let workers = (0..q.num_consumers)
            .map(|_| tokio::spawn(s.clone().work(queue.clone())))
            .collect();
        *self.queue.lock().unwrap_or_else(PoisonError::into_inner) = Some(queue.clone());
        *self.stage.lock().unwrap_or_else(PoisonError::into_inner) =
            stage.as_ref().map(|(st, _)| st.clone());
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some(Running {
            queue,
            workers,
            stage,
        });
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(Running {
            queue,
            workers,
            stage,
        }) = running
        else {
            return Ok(());
        };
        let s = &self.shared;
        if let Some((stage, flusher)) = stage {
            stage.close(Duration::from_secs(5)).await;
            let _one = stage.flushing.lock().await;
            flusher.abort();
            s.flush_locked(&stage, &queue, true).await;
            let (requests, items) = stage.held();
            if requests > 0 && stage.persistent() {
                tracing::info!(exporter = %s.label, requests, items, "merged requests could not be queued at shutdown; they stay in the persistent stage for the next start");
            } else if requests > 0 {
                s.counters.send_failed.add(items);
                tracing::error!(exporter = %s.label, requests, items, destination = %s.push.destination(), "merged requests could not be queued at shutdown; they are lost");
            }
        }
        queue.close();
        let aborts: Vec<_> = workers.iter().map(|w| w.abort_handle()).collect();
        let joined = async {
            for w in workers {
                let _ = w.await;
            }
        };
        let drain = s.settings.drain_timeout;
        if tokio::time::timeout(drain, joined).await.is_err() {
            aborts.iter().for_each(|a| a.abort());
        }
        let left = queue.left();
        for w in queue.drain_waiters() {
            let _ = w.send(Err(ConsumerError::retryable("the exporter stopped")));
        }
        if left.requests == 0 {
            return Ok(());
        }
        if queue.persistent() {
            tracing::info!(
                exporter = %s.label,
                requests = left.requests,
                items = left.items,
                "the sending queue did not drain within {}s; what is left stays in the persistent queue for the next start",
                drain.as_secs()
            );
        } else {
            s.counters.send_failed.add(left.items);
            tracing::error!(
                exporter = %s.label,
                requests = left.requests,
                items = left.items,
                destination = %s.push.destination(),
                "the sending queue did not drain within {}s of shutdown; these requests are lost (sending_queue.storage keeps them across restarts)",
                drain.as_secs()
            );
        }
        Ok(())
    }
}
