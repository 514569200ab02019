//! The exporter service: loads the config, applies it to the exporter's state, runs the
//! scheduler and the web side, reloads on request and shuts down gracefully.
//!
//! The wiring is generic over [`Exporter`] (the state configs are applied to, which scrapes
//! and pages read as [`web::Pages`]) and [`Probing`] (what runs the probes), so the whole
//! lifecycle is tested with fakes; [`start`] and [`run`] use the real [`Store`] with its
//! [`Exposition`], and the [`Scheduler`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::SystemTime;

use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::metrics::{Exposition, Store};
use crate::oauth2::Tokens;
use crate::page::{self, PageInfo};
use crate::schedule::{NetworkProber, Scheduler};
use crate::shard::{self, Shard};
use crate::web::{self, ListenAddress, WebConfig, WebConfigError};

mod accounts;

use accounts::InForce;

/// What the service needs to start.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config_file: PathBuf,
    pub listen_address: ListenAddress,
    /// Basic auth and TLS for the web side (`--web.config.file`).
    pub web_config_file: Option<PathBuf>,
    /// Probe only this replica's share of the accounts (`--shard=i/n`).
    pub shard: Option<Shard>,
    /// Serve `POST /-/reload` (`--web.enable-lifecycle`); without it the route answers 403.
    /// SIGHUP reloads either way.
    pub enable_lifecycle: bool,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config is invalid; every problem is listed.
    #[error("{}", errors.report(path))]
    Config { path: PathBuf, errors: ConfigErrors },
    #[error(transparent)]
    WebConfig(#[from] WebConfigError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: ListenAddress,
        source: io::Error,
    },
}

/// The state the service applies configs to; the web side reads it as [`web::Pages`].
pub trait Exporter: web::Pages {
    /// Makes the set of accounts match `config`; unchanged accounts keep their state.
    fn apply_config(&self, config: &Config);
    fn config_reload(&self, ok: bool, at: SystemTime);
    /// The token sources of the OAuth2 accounts, for the metrics; set once at start.
    fn use_tokens(&self, _tokens: Arc<Tokens>) {}
    /// Account source `name`'s state after a read; `None` once the source is removed.
    fn source_status(&self, _name: &str, _status: Option<crate::source::Status>) {}
}

/// What runs the probes: follows `config`, putting each config on `applied` once it is in
/// force, until `shutdown` turns true, then returns once in-flight probes are done.
pub trait Probing: Send + 'static {
    fn run(
        self,
        config: watch::Receiver<Arc<Config>>,
        applied: watch::Sender<Arc<Config>>,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send;
}

/// Runs the exporter until `shutdown` completes, reloading the config whenever `reloads`
/// delivers (SIGHUP); `POST /-/reload` as well when the lifecycle API is enabled.
pub async fn run(
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<()>,
) -> Result<(), AppError> {
    tokio::pin!(shutdown);
    // Loading reads files, which may hang (a dead network mount) until their deadline: a
    // signal to stop wins over a load in progress.
    let running = tokio::select! {
        started = start(options) => started?,
        () = &mut shutdown => return Ok(()),
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = reloads.recv() => {
                // The outcome is logged and shown by the reload metrics.
                tokio::select! {
                    _ = running.reload() => {}
                    () = &mut shutdown => break,
                }
            }
        }
    }
    running.shutdown().await;
    Ok(())
}

/// Starts the exporter with the real store and scheduler.
pub async fn start(options: RunOptions) -> Result<Running, AppError> {
    // Every input is checked before anything is built, so a bad one is refused without side
    // effects.
    let (path, shard) = (options.config_file.clone(), options.shard);
    // Reading the config and its password files is blocking I/O.
    let config = tokio::task::spawn_blocking(move || load(&path, shard))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    let web_config = load_web_config(options.web_config_file.as_deref()).await?;
    let store = Arc::new(Store::new());
    let scheduler = Scheduler::new(Arc::clone(&store), Arc::new(NetworkProber::default()));
    let exporter = Arc::new(Live {
        exposition: Exposition::new(Arc::clone(&store)),
        store,
        config_file: options.config_file.display().to_string(),
        shard: options.shard.map(|s| s.to_string()),
    });
    start_with(options, config, web_config, exporter, scheduler).await
}

/// Loads the config file and keeps this shard's accounts.
pub fn load(path: &Path, shard: Option<Shard>) -> Result<Config, AppError> {
    load_config(path, shard).map_err(|errors| AppError::Config {
        path: path.to_path_buf(),
        errors,
    })
}

/// Loads the web config file; none means plain HTTP without auth.
pub async fn load_web_config(path: Option<&Path>) -> Result<WebConfig, AppError> {
    let Some(path) = path else {
        return Ok(WebConfig::default());
    };
    let path = path.to_path_buf();
    // Certificate files are read and a bcrypt hash is computed: blocking work.
    let web = tokio::task::spawn_blocking(move || WebConfig::load(&path))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    Ok(web)
}

/// Starts the service over any exporter state and prober, with `config` and `web_config` as
/// loaded by [`load`] and [`load_web_config`]: binds the web side, applies the config, starts
/// probing, becomes ready.
pub async fn start_with<E: Exporter, P: Probing>(
    options: RunOptions,
    config: Config,
    web_config: WebConfig,
    exporter: Arc<E>,
    probing: P,
) -> Result<Running, AppError> {
    // Bound before probing starts: an exporter that cannot serve should not log in anywhere.
    let listener = web::bind(&options.listen_address)
        .await
        .map_err(|source| AppError::Listen {
            address: options.listen_address.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| AppError::Listen {
        address: options.listen_address.clone(),
        source,
    })?;

    // One registry for the life of the process: a reload keeps the sources (and their
    // cached tokens) of unchanged settings.
    let tokens = Arc::new(Tokens::default());
    let config = resolve_oauth2(config, Arc::clone(&tokens))
        .await
        .map_err(|errors| AppError::Config {
            path: options.config_file.clone(),
            errors,
        })?;
    exporter.use_tokens(Arc::clone(&tokens));
    exporter.apply_config(&config);
    exporter.config_reload(true, SystemTime::now());
    tracing::info!(
        path = %options.config_file.display(),
        groups = config.groups.len(),
        accounts = config.account_count(),
        "config loaded"
    );

    let shared = Arc::new(config.clone());
    let (config_tx, config_rx) = watch::channel(Arc::clone(&shared));
    let (applied_tx, applied_rx) = watch::channel(shared);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let scheduler = tokio::spawn(probing.run(config_rx, applied_tx, shutdown_rx.clone()));
    let in_force = InForce::new(
        config,
        Arc::clone(&exporter),
        options.shard,
        tokens,
        config_tx,
        applied_rx,
    );
    in_force.start().await;

    let scheme = if web_config.is_tls() { "https" } else { "http" };
    let (web_config_tx, web_config_rx) = watch::channel(web_config);
    let reloader = ReloadHandle(Arc::new(Reloads::new(Reloader {
        path: options.config_file.clone(),
        shard: options.shard,
        web_config_file: options.web_config_file.clone(),
        exporter: Arc::clone(&exporter),
        in_force: Arc::clone(&in_force),
        web_config: web_config_tx,
    })));
    let ready = Arc::new(AtomicBool::new(false));
    let site = Arc::new(Site {
        exporter,
        reloader: reloader.clone(),
        lifecycle: options.enable_lifecycle,
        ready: Arc::clone(&ready),
    });
    let mut web_shutdown = shutdown_rx;
    let web = tokio::spawn(web::serve(listener, web_config_rx, site, async move {
        let _ = web_shutdown.wait_for(|stop| *stop).await;
    }));
    tracing::info!(address = %addr, "listening on {addr} ({scheme})");
    ready.store(true, Ordering::SeqCst);
    let sources: Box<dyn StopSources> = Box::new(in_force);
    Ok(Running {
        addr,
        scheme,
        sources,
        reloader,
        ready,
        shutdown: shutdown_tx,
        scheduler,
        web,
    })
}

/// A running exporter.
pub struct Running {
    /// Where the web side listens (the real port when started on port 0).
    pub addr: SocketAddr,
    /// `http`, or `https` when the web config file sets up TLS.
    pub scheme: &'static str,
    sources: Box<dyn StopSources>,
    reloader: ReloadHandle,
    ready: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    scheduler: JoinHandle<()>,
    web: JoinHandle<()>,
}

impl Running {
    /// Loads the config file again, as SIGHUP and `POST /-/reload` do.
    pub async fn reload(&self) -> Result<usize, ConfigErrors> {
        self.reloader.reload().await
    }

    /// A handle that reloads, for signal handlers.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reloader.clone()
    }

    /// Stops probing (waiting for in-flight probes) and the web side (draining in-flight
    /// requests), then returns.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.ready.store(false, Ordering::SeqCst);
        self.sources.stop().await;
        let _ = self.shutdown.send(true);
        let (scheduler, web) = tokio::join!(self.scheduler, self.web);
        for (what, result) in [("scheduler", scheduler), ("web server", web)] {
            if result.as_ref().is_err_and(|e| e.is_panic()) {
                tracing::error!("the {what} panicked");
            }
        }
        tracing::info!("stopped");
    }
}

/// Reloads the config. Clones share one [`Reloads`]: loads never interleave, and requests
/// made while a load runs share the next one.
#[derive(Clone)]
pub struct ReloadHandle(Arc<Reloads>);

impl ReloadHandle {
    /// `Ok` with the number of accounts now configured, or every error (the previous config
    /// stays in force). The answer comes from a load that started after this call: it reflects
    /// the file as it was then or later. `Ok` comes once the scheduler runs the new config:
    /// from then on no probe starts with settings it replaced.
    pub async fn reload(&self) -> Result<usize, ConfigErrors> {
        self.0.reload().await
    }
}

type Outcome = Result<usize, ConfigErrors>;
type ReloadFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One load of the config file, applied if it is valid.
trait Load: Send + Sync + 'static {
    fn load(&self) -> ReloadFuture<'_>;
}

/// Serialises and coalesces reloads, so that a flood of requests (SIGHUPs, `POST
/// /-/reload`) costs at most two loads: the one running, and one for every request that came
/// while it ran.
struct Reloads {
    loader: Box<dyn Load>,
    /// Held while a load runs.
    serial: Mutex<()>,
    /// Requests made so far; a request is numbered by this count after it.
    requested: AtomicU64,
    /// Requests waiting for the load in progress to end.
    queued: AtomicUsize,
    /// The latest load: the number of requests made before it started (it answers all of
    /// them), and its outcome.
    last: StdMutex<Option<(u64, Outcome)>>,
}

impl Reloads {
    fn new(loader: impl Load) -> Self {
        Reloads {
            loader: Box::new(loader),
            serial: Mutex::new(()),
            requested: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            last: StdMutex::new(None),
        }
    }

    async fn reload(&self) -> Outcome {
        let number = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let waiting = Waiting::new(&self.queued);
        let _serial = self.serial.lock().await;
        drop(waiting);
        if let Some((answered, outcome)) = &*self.last()
            && *answered >= number
        {
            tracing::debug!("reload request answered by the reload that followed it");
            return outcome.clone();
        }
        let answers = self.requested.load(Ordering::SeqCst);
        let outcome = self.loader.load().await;
        *self.last() = Some((answers, outcome.clone()));
        outcome
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<(u64, Outcome)>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts a request as waiting for as long as it lives, including a request whose client
/// went away while it waited.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stops following the account sources, type-erased for [`Running`].
trait StopSources: Send + Sync {
    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl<E: Exporter> StopSources for Arc<InForce<E>> {
    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(InForce::stop(self))
    }
}

struct Reloader<E> {
    path: PathBuf,
    shard: Option<Shard>,
    web_config_file: Option<PathBuf>,
    exporter: Arc<E>,
    /// The accounts in force, which a valid config joins.
    in_force: Arc<InForce<E>>,
    /// Read by the web side for each new connection.
    web_config: watch::Sender<WebConfig>,
}

impl<E: Exporter> Load for Reloader<E> {
    fn load(&self) -> ReloadFuture<'_> {
        Box::pin(async move {
            let (path, shard) = (self.path.clone(), self.shard);
            let web_path = self.web_config_file.clone();
            let tokens = Arc::clone(self.in_force.tokens());
            // Reading password files and certificates is blocking I/O.
            let loaded = tokio::task::spawn_blocking(move || {
                let web = web_path.map(|p| WebConfig::load(&p));
                let config = load_config(&path, shard).and_then(|mut config| {
                    config.resolve_oauth2(&tokens)?;
                    Ok(config)
                });
                with_web_config(config, web)
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            let now = SystemTime::now();
            match loaded {
                Ok((config, web_config)) => {
                    if let Some(mut web_config) = web_config {
                        web_config.keep_checks_from(&self.web_config.borrow());
                        self.web_config.send_replace(web_config);
                    }
                    // Answered once the scheduler runs it: from then on no probe starts with
                    // settings it replaced.
                    let accounts = self.in_force.file(config).await;
                    self.exporter.config_reload(true, now);
                    tracing::info!(
                        path = %self.path.display(),
                        accounts,
                        "config reloaded: {accounts} accounts"
                    );
                    Ok(accounts)
                }
                Err(errors) => {
                    // The state first, as on success: whoever reads the log line and then
                    // scrapes sees the failure.
                    self.exporter.config_reload(false, now);
                    for e in errors.errors() {
                        tracing::error!(path = %self.path.display(), "config error: {e}");
                    }
                    tracing::error!(
                        path = %self.path.display(),
                        errors = errors.len(),
                        "config reload failed; the previous config stays in force"
                    );
                    Err(errors)
                }
            }
        })
    }
}

/// A reload takes both files or neither: a bad web config file keeps the previous config and
/// web config in force, and is reported with the config's own errors.
fn with_web_config(
    config: Result<Config, ConfigErrors>,
    web: Option<Result<WebConfig, WebConfigError>>,
) -> Result<(Config, Option<WebConfig>), ConfigErrors> {
    let as_error = |e: WebConfigError| ConfigError {
        location: String::new(),
        field: String::new(),
        message: e.to_string(),
    };
    match (config, web.transpose()) {
        (Ok(config), Ok(web)) => Ok((config, web)),
        (Ok(_), Err(e)) => Err(as_error(e).into()),
        (Err(mut errors), Err(e)) => {
            errors.push(as_error(e));
            Err(errors)
        }
        (Err(errors), Ok(_)) => Err(errors),
    }
}

/// Gives `config`'s OAuth2 accounts their logins from `tokens`, off the runtime (a token
/// endpoint's `ca_file` is read).
async fn resolve_oauth2(mut config: Config, tokens: Arc<Tokens>) -> Result<Config, ConfigErrors> {
    tokio::task::spawn_blocking(move || config.resolve_oauth2(&tokens).map(|()| config))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn load_config(path: &Path, shard: Option<Shard>) -> Result<Config, ConfigErrors> {
    let mut config = Config::load(path)?;
    if let Some(shard) = shard {
        for group in &mut config.groups {
            group.accounts.retain(|a| shard::owns(&a.name, shard));
        }
    }
    Ok(config)
}

/// The web side's view of the service.
struct Site<E> {
    exporter: Arc<E>,
    reloader: ReloadHandle,
    /// Whether `POST /-/reload` is served.
    lifecycle: bool,
    ready: Arc<AtomicBool>,
}

impl<E: Exporter> web::Backend for Site<E> {
    type Pages = E;

    fn pages(&self) -> &E {
        &self.exporter
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn lifecycle_enabled(&self) -> bool {
        self.lifecycle
    }

    async fn reload(&self) -> Result<String, ConfigErrors> {
        let accounts = self.reloader.reload().await?;
        Ok(format!("config reloaded: {accounts} accounts"))
    }
}

// ---------------------------------------------------------------------------------------------
// The real parts.

/// The account store, with the exposition and the pages read from it.
struct Live {
    store: Arc<Store>,
    exposition: Exposition,
    config_file: String,
    shard: Option<String>,
}

impl web::Pages for Live {
    fn write_metrics(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.exposition.write(out)
    }

    fn landing_page(&self) -> String {
        let info = PageInfo {
            version: env!("CARGO_PKG_VERSION"),
            config_file: Some(self.config_file.clone()),
            shard: self.shard.clone(),
            last_reload_ok: self.store.last_reload_ok(),
            now: SystemTime::now(),
            sources: self.store.sources(),
        };
        page::landing(&self.store.accounts(), &info)
    }

    fn account_page(&self, name: &str) -> Option<String> {
        self.store.account(name).map(|a| page::account_page(&a))
    }
}

impl Exporter for Live {
    fn apply_config(&self, config: &Config) {
        self.store.apply_config(config);
    }

    fn config_reload(&self, ok: bool, at: SystemTime) {
        self.store.config_reload(ok, at);
    }

    fn use_tokens(&self, tokens: Arc<Tokens>) {
        self.store.use_tokens(tokens);
    }

    fn source_status(&self, name: &str, status: Option<crate::source::Status>) {
        self.store.source_status(name, status);
    }
}

impl Probing for Scheduler<Store, NetworkProber> {
    fn run(
        self,
        config: watch::Receiver<Arc<Config>>,
        applied: watch::Sender<Arc<Config>>,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send {
        Scheduler::run(self, config, applied, shutdown)
    }
}

#[cfg(test)]
mod tests;
