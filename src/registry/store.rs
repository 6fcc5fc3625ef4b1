//! The endpoint registry: endpoint sets per (service host, port), from config, a user map
//! and user `Discover` streams, published lock-free to [`ClusterEndpoints`] handles.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tower::discover::{Change, Discover};

use crate::config::service_entry::Resolution;
use crate::error::BoxError;

use super::RegistryError;
use super::dns::{DnsPlan, Resolve, SystemResolver, resolve_loop};
use super::endpoint::Endpoint;
use super::service::{EndpointAddress, ServiceRegistry};

/// Istio's default DNS refresh rate for `resolution: DNS` clusters (Envoy's
/// `dns_refresh_rate`): 30 s.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);

type Key = (Arc<str>, u16);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every update is a
    // whole replacement), so a poisoned lock is used as is.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The endpoint sets of one (host, port), by source, and the live subset views.
pub(crate) struct Entry {
    state: Mutex<EntryState>,
}

pub(crate) struct EntryState {
    user_static: Option<Vec<Endpoint>>,
    discovered: Option<Vec<Endpoint>>,
    config: Option<Vec<Endpoint>>,
    /// The task allowed to write `config` (a DNS resolver's id; 0 = none, config is set by
    /// `apply_config` itself). A resolver stopped by a reload may still be running its last
    /// step on another thread: its late write is ignored.
    config_owner: u64,
    /// The same for `discovered` and the Discover task of the key.
    discover_owner: u64,
    effective: Arc<[Endpoint]>,
    views: Vec<Weak<View>>,
}

impl EntryState {
    /// Sets the config source as `apply_config` (`None`: config has no such key any more),
    /// revoking any resolver's right to write it.
    fn set_config(&mut self, endpoints: Option<Vec<Endpoint>>) {
        self.config_owner = 0;
        self.config = endpoints;
    }

    /// Sets the config source as the resolver task `owner`, if it still owns the key.
    pub(crate) fn set_config_from(&mut self, owner: u64, endpoints: Vec<Endpoint>) {
        if self.config_owner == owner {
            self.config = Some(endpoints);
        }
    }

    /// Sets the Discover source as the Discover task `owner`, if it still owns the key.
    fn set_discovered_from(&mut self, owner: u64, endpoints: Vec<Endpoint>) {
        if self.discover_owner == owner {
            self.discovered = Some(endpoints);
        }
    }

    /// The set in force: the user's static map, else the Discover stream's set, else config.
    fn winner(&self) -> &[Endpoint] {
        self.user_static
            .as_deref()
            .or(self.discovered.as_deref())
            .or(self.config.as_deref())
            .unwrap_or_default()
    }
}

impl Entry {
    fn new() -> Self {
        Entry {
            state: Mutex::new(EntryState {
                user_static: None,
                discovered: None,
                config: None,
                config_owner: 0,
                discover_owner: 0,
                effective: Arc::from(Vec::new()),
                views: Vec::new(),
            }),
        }
    }

    /// Changes the sources with `f`, then, if the set in force changed, publishes it to every
    /// live view (each filtered by its subset). A short synchronous lock.
    pub(crate) fn update(&self, f: impl FnOnce(&mut EntryState)) {
        let mut state = lock(&self.state);
        f(&mut state);
        if *state.winner() == *state.effective {
            return;
        }
        state.effective = Arc::from(state.winner());
        let effective = state.effective.clone();
        state.views.retain(|weak| match weak.upgrade() {
            Some(view) => {
                view.current.store(Arc::new(view.filter(&effective)));
                true
            }
            None => false,
        });
    }

    /// The view for `labels`, shared with earlier handles of the same subset.
    fn view(&self, labels: BTreeMap<String, String>) -> Arc<View> {
        let mut state = lock(&self.state);
        state.views.retain(|w| w.strong_count() > 0);
        if let Some(view) = state
            .views
            .iter()
            .filter_map(Weak::upgrade)
            .find(|v| v.labels == labels)
        {
            return view;
        }
        let mut view = View {
            labels,
            current: ArcSwap::from_pointee(Arc::from(Vec::new())),
        };
        view.current = ArcSwap::from_pointee(view.filter(&state.effective));
        let view = Arc::new(view);
        state.views.push(Arc::downgrade(&view));
        view
    }
}

/// One subset's view of an entry: the endpoints carrying the subset's labels.
struct View {
    labels: BTreeMap<String, String>,
    current: ArcSwap<Arc<[Endpoint]>>,
}

impl View {
    fn filter(&self, all: &Arc<[Endpoint]>) -> Arc<[Endpoint]> {
        if self.labels.is_empty() {
            return all.clone();
        }
        all.iter()
            .filter(|e| e.matches(&self.labels))
            .cloned()
            .collect()
    }
}

/// A live handle on the endpoints of one cluster: a (service host, service port, subset).
///
/// Taken once when a config is compiled ([`EndpointRegistry::cluster`]); [`load`](Self::load)
/// is the per-request read. Handles see every later change of the underlying set, whatever
/// its source, and survive config reloads.
#[derive(Clone)]
pub struct ClusterEndpoints {
    host: Arc<str>,
    port: u16,
    view: Arc<View>,
}

impl ClusterEndpoints {
    /// The endpoints right now, already filtered by the subset's labels. Lock-free (an
    /// `arc-swap` load and one reference-count increment); the filtering was done when the
    /// set changed, not here.
    pub fn load(&self) -> Arc<[Endpoint]> {
        Arc::clone(&self.view.current.load())
    }

    /// The service host (lower-cased).
    pub fn host(&self) -> &Arc<str> {
        &self.host
    }

    /// The service port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The subset's labels (DestinationRule `subsets[].labels`); empty = every endpoint.
    pub fn subset_labels(&self) -> &BTreeMap<String, String> {
        &self.view.labels
    }
}

impl fmt::Debug for ClusterEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterEndpoints")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("subset_labels", &self.view.labels)
            .field("endpoints", &self.load().len())
            .finish()
    }
}

/// The endpoint registry: the endpoints of every (service host, service port), long-lived
/// across config reloads. Cheap to clone (an `Arc` inside); clones share everything.
///
/// Each key has up to three sources; the first present wins:
/// 1. the user's static map ([`set_static`](Self::set_static));
/// 2. a user `Discover` stream ([`discover`](Self::discover)), once it has reported a change;
/// 3. config ([`apply_config`](Self::apply_config)): ServiceEntry `endpoints`, selected
///    WorkloadEntries, and DNS-resolved addresses.
///
/// Readers take a [`ClusterEndpoints`] handle per (host, port, subset) with
/// [`cluster`](Self::cluster); every change is pushed to the handles, filtered once per
/// subset. Keys are case-insensitive in the host. Keys are never removed (a key nothing
/// feeds any more has no endpoints).
///
/// Dropping the last clone stops the DNS resolvers and Discover tasks it started.
#[derive(Clone)]
pub struct EndpointRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    entries: Mutex<HashMap<Key, Arc<Entry>>>,
    tasks: Mutex<Tasks>,
    refresh_ms: Arc<AtomicU64>,
    resolver: Mutex<Arc<dyn Resolve>>,
    /// Ids of resolver and Discover tasks (see `EntryState::config_owner`); never 0.
    next_task_id: AtomicU64,
}

#[derive(Default)]
struct Tasks {
    /// The keys the current config feeds.
    config_keys: HashSet<Key>,
    /// DNS resolver tasks, by service host.
    dns: HashMap<Arc<str>, (DnsPlan, AbortHandle)>,
    /// Discover tasks, by key.
    discover: HashMap<Key, AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = lock(&self.tasks);
        for (_, abort) in tasks.dns.values() {
            abort.abort();
        }
        for abort in tasks.discover.values() {
            abort.abort();
        }
    }
}

impl Default for EndpointRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EndpointRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tasks = lock(&self.inner.tasks);
        f.debug_struct("EndpointRegistry")
            .field("keys", &lock(&self.inner.entries).len())
            .field("dns_resolvers", &tasks.dns.len())
            .field("discover_streams", &tasks.discover.len())
            .field("dns_refresh", &self.dns_refresh())
            .finish()
    }
}

impl EndpointRegistry {
    /// An empty registry, re-resolving DNS services every [`DEFAULT_DNS_REFRESH`] (30 s)
    /// with the [`SystemResolver`].
    pub fn new() -> Self {
        EndpointRegistry {
            inner: Arc::new(Inner {
                entries: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Tasks::default()),
                refresh_ms: Arc::new(AtomicU64::new(millis(DEFAULT_DNS_REFRESH))),
                resolver: Mutex::new(Arc::new(SystemResolver)),
                next_task_id: AtomicU64::new(1),
            }),
        }
    }

    /// With DNS services re-resolved every `every` (Envoy's `dns_refresh_rate`; default 30 s,
    /// at least 1 ms). Running resolvers use the new interval from their next sleep.
    pub fn with_dns_refresh(self, every: Duration) -> Self {
        self.inner
            .refresh_ms
            .store(millis(every).max(1), Ordering::Relaxed);
        self
    }

    /// The DNS refresh interval.
    pub fn dns_refresh(&self) -> Duration {
        Duration::from_millis(self.inner.refresh_ms.load(Ordering::Relaxed))
    }

    /// With this resolver for DNS services (default [`SystemResolver`]); resolvers started
    /// later use it.
    pub fn with_resolver(self, resolver: Arc<dyn Resolve>) -> Self {
        *lock(&self.inner.resolver) = resolver;
        self
    }

    fn task_id(&self) -> u64 {
        self.inner.next_task_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The entry for (host, port), created empty if needed.
    fn entry(&self, host: &str, port: u16) -> (Key, Arc<Entry>) {
        let key: Key = (host.to_ascii_lowercase().into(), port);
        let mut entries = lock(&self.inner.entries);
        let entry = entries
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Entry::new()))
            .clone();
        (key, entry)
    }

    /// A live handle on the endpoints of `host`:`port` that carry every label of `subset`
    /// (DestinationRule `subsets[].labels`; `None` or empty = every endpoint). Call it when
    /// compiling a config, not per request; handles of the same (host, port, subset) share one
    /// filtered set.
    pub fn cluster(
        &self,
        host: &str,
        port: u16,
        subset: Option<&BTreeMap<String, String>>,
    ) -> ClusterEndpoints {
        let (key, entry) = self.entry(host, port);
        let view = entry.view(subset.cloned().unwrap_or_default());
        ClusterEndpoints {
            host: key.0,
            port,
            view,
        }
    }

    /// Sets the user's static endpoints of `host`:`port`. They take precedence over config and
    /// Discover endpoints for that key (an empty list too: the key then has no endpoints).
    /// Weights of 0 are stored as 1.
    pub fn set_static(&self, host: &str, port: u16, endpoints: Vec<Endpoint>) {
        let endpoints = endpoints.into_iter().map(Endpoint::normalized).collect();
        let (_, entry) = self.entry(host, port);
        entry.update(|s| s.user_static = Some(endpoints));
    }

    /// Removes the user's static endpoints of `host`:`port`; Discover or config endpoints
    /// apply again.
    pub fn remove_static(&self, host: &str, port: u16) {
        let (_, entry) = self.entry(host, port);
        entry.update(|s| s.user_static = None);
    }

    /// Feeds `host`:`port` from a `tower::discover::Discover` stream: a task on the current
    /// tokio runtime applies each `Change::Insert` (a new key, or a new endpoint for a known
    /// key in place) and `Change::Remove`. Changes that are ready together are published
    /// together. Once the stream has reported a change its set takes precedence over config
    /// (the static map still wins). When the stream ends the task ends quietly and its last
    /// set stays; a stream error is logged and ends it the same way. A second stream for the
    /// same key replaces the first (which is stopped).
    ///
    /// Errors: [`RegistryError::NoRuntime`] outside a tokio runtime.
    pub fn discover<D>(&self, host: &str, port: u16, discover: D) -> Result<(), RegistryError>
    where
        D: Discover<Service = Endpoint> + Send + 'static,
        D::Key: Eq + Send + 'static,
        D::Error: Into<BoxError> + Send,
    {
        let handle = Handle::try_current().map_err(|_| RegistryError::NoRuntime {
            what: "a Discover stream",
        })?;
        let (key, entry) = self.entry(host, port);
        let id = self.task_id();
        let mut tasks = lock(&self.inner.tasks);
        entry.update(|s| s.discover_owner = id);
        let task = handle.spawn(drive_discover(key.clone(), id, discover, entry));
        if let Some(old) = tasks.discover.insert(key, task.abort_handle()) {
            old.abort();
        }
        Ok(())
    }

    /// Publishes the endpoints a config gives (see [`ServiceRegistry`]): for each service
    /// port, `STATIC` services' endpoints (and selected WorkloadEntries) at once; `DNS` /
    /// `DNS_ROUND_ROBIN` services get a resolver task (re-resolving every
    /// [`dns_refresh`](Self::dns_refresh); a failed resolution keeps the last addresses); a
    /// service unchanged since the previous call keeps its running resolver. `NONE` and
    /// `DYNAMIC_DNS` services have no endpoints (the caller forwards to the requested
    /// authority). Keys the previous config fed and this one does not lose their config
    /// endpoints; resolvers of services gone are stopped.
    ///
    /// Errors: [`RegistryError::NoRuntime`] when a DNS service needs a resolver and there is
    /// no tokio runtime; nothing is changed then.
    pub fn apply_config(&self, services: &ServiceRegistry) -> Result<(), RegistryError> {
        let needs_runtime = services
            .iter()
            .any(|(_, s)| s.resolves_dns() && !s.config_endpoints().is_empty());
        let handle = match Handle::try_current() {
            Ok(h) => Some(h),
            Err(_) if !needs_runtime => None,
            Err(_) => {
                return Err(RegistryError::NoRuntime {
                    what: "DNS resolution of ServiceEntry endpoints",
                });
            }
        };
        let resolver = lock(&self.inner.resolver).clone();
        let mut tasks = lock(&self.inner.tasks);
        let mut old_dns = std::mem::take(&mut tasks.dns);
        let mut keys = HashSet::new();
        for (_, svc) in services.iter() {
            if svc.passthrough() {
                continue;
            }
            let entries: Vec<Arc<Entry>> = svc
                .ports
                .iter()
                .map(|p| {
                    let (key, entry) = self.entry(&svc.host, p.number);
                    keys.insert(key);
                    entry
                })
                .collect();
            let handle = match &handle {
                Some(h) if svc.resolves_dns() && !svc.config_endpoints().is_empty() => h,
                _ => {
                    // STATIC (IP addresses only), or a DNS service with nothing to resolve.
                    for (port, entry) in svc.ports.iter().zip(&entries) {
                        let endpoints = svc
                            .config_endpoints()
                            .iter()
                            .filter_map(|ep| match ep.address {
                                EndpointAddress::Ip(ip) => Some(ep.endpoint(ip, port)),
                                EndpointAddress::Dns(_) => None,
                            })
                            .collect();
                        entry.update(|s| s.set_config(Some(endpoints)));
                    }
                    continue;
                }
            };
            let plan = DnsPlan {
                first_only: svc.resolution == Resolution::DnsRoundRobin,
                endpoints: svc.config_endpoints().to_vec(),
                ports: svc.ports.clone(),
            };
            if let Some((old_plan, abort)) = old_dns.remove(&svc.host) {
                if old_plan == plan {
                    tasks.dns.insert(svc.host.clone(), (old_plan, abort));
                    continue;
                }
                abort.abort();
            }
            let id = self.task_id();
            for entry in &entries {
                entry.update(|s| s.config_owner = id);
            }
            let task = handle.spawn(resolve_loop(
                svc.host.clone(),
                id,
                plan.clone(),
                entries,
                resolver.clone(),
                self.inner.refresh_ms.clone(),
            ));
            tasks
                .dns
                .insert(svc.host.clone(), (plan, task.abort_handle()));
        }
        for (_, abort) in old_dns.into_values() {
            abort.abort();
        }
        let entries = lock(&self.inner.entries);
        for gone in tasks.config_keys.difference(&keys) {
            if let Some(entry) = entries.get(gone) {
                entry.update(|s| s.set_config(None));
            }
        }
        tasks.config_keys = keys;
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Applies a Discover stream's changes to `entry` until the stream ends or fails.
async fn drive_discover<D>(key: Key, id: u64, discover: D, entry: Arc<Entry>)
where
    D: Discover<Service = Endpoint>,
    D::Key: Eq,
    D::Error: Into<BoxError>,
{
    let mut discover = pin!(discover);
    let mut set: Vec<(D::Key, Endpoint)> = Vec::new();
    loop {
        let Some(first) = poll_fn(|cx| discover.as_mut().poll_discover(cx)).await else {
            return;
        };
        // Every change ready now goes into one publication.
        let mut next = Ready::Change(first);
        let stop = loop {
            match next {
                Ready::Change(Ok(Change::Insert(k, endpoint))) => {
                    let endpoint = endpoint.normalized();
                    match set.iter_mut().find(|(have, _)| *have == k) {
                        Some(slot) => slot.1 = endpoint,
                        None => set.push((k, endpoint)),
                    }
                }
                Ready::Change(Ok(Change::Remove(k))) => set.retain(|(have, _)| *have != k),
                Ready::Change(Err(error)) => {
                    let error: BoxError = error.into();
                    tracing::warn!(
                        host = %key.0, port = key.1, %error,
                        "endpoint Discover stream failed; keeping its last endpoints"
                    );
                    break true;
                }
                Ready::Ended => break true,
                Ready::Nothing => break false,
            }
            next = poll_fn(|cx| {
                Poll::Ready(match discover.as_mut().poll_discover(cx) {
                    Poll::Ready(Some(change)) => Ready::Change(change),
                    Poll::Ready(None) => Ready::Ended,
                    Poll::Pending => Ready::Nothing,
                })
            })
            .await;
        };
        let endpoints: Vec<Endpoint> = set.iter().map(|(_, e)| e.clone()).collect();
        entry.update(|s| s.set_discovered_from(id, endpoints));
        if stop {
            return;
        }
    }
}

/// What a Discover stream has ready without waiting.
enum Ready<C> {
    Change(C),
    Ended,
    Nothing,
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
