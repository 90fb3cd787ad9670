//! The gateway in force, and what outlives a reload.
//!
//! [`State`] holds the current [`Gateway`] snapshot behind an `ArcSwap`:
//! each request loads the snapshot once when it starts and keeps it to the
//! end, so in-flight requests finish under the policy they started with and
//! new requests see a new policy at once. A reload builds and validates a
//! whole new snapshot first and swaps only on success; a failed reload
//! leaves the old one serving. Metrics live here, outside the snapshot.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::proxy::{BuildError, Gateway};
use crate::telemetry::metrics::Metrics;

pub struct State {
    current: ArcSwap<Gateway>,
    pub metrics: Arc<Metrics>,
    /// The config file, when the gateway was started from one (reloads
    /// read it again).
    pub config_path: Option<PathBuf>,
    reload_lock: tokio::sync::Mutex<()>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("the listener addresses changed ({0}); they are bound once at start, so restart the gateway to change them")]
    Listeners(String),
    #[error("there is no config file to reload (the gateway was started from built-in settings)")]
    NoFile,
}

impl State {
    pub fn new(gateway: Gateway, metrics: Arc<Metrics>, config_path: Option<PathBuf>) -> State {
        metrics.config_loaded(&gateway.config_hash);
        metrics.tls_expiry.set(gateway.tls_expiry.unwrap_or(0.0));
        metrics
            .crl_next_update
            .set(gateway.crl_next_update.unwrap_or(0.0));
        State {
            current: ArcSwap::from_pointee(gateway),
            metrics,
            config_path,
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The snapshot for one request or connection.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Reads, validates and builds the config again and swaps it in. The
    /// old snapshot keeps serving when anything fails.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let result = self.try_reload().await;
        match &result {
            Ok(hash) => {
                self.metrics
                    .reloads
                    .get_or_create(&crate::telemetry::metrics::ResultLabels { result: "success" })
                    .inc();
                tracing::info!(config_hash = %hash, "config reloaded");
                for w in &self.gateway().config.warnings {
                    tracing::warn!(key = %w.key, "{}", w.message);
                }
            }
            Err(e) => {
                self.metrics
                    .reloads
                    .get_or_create(&crate::telemetry::metrics::ResultLabels { result: "failure" })
                    .inc();
                tracing::error!("config reload refused; the previous config keeps serving: {e}");
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<String, ReloadError> {
        let path = self.config_path.as_deref().ok_or(ReloadError::NoFile)?;
        let cfg = Config::load(path)?;
        let old = self.gateway();
        let mut changed = Vec::new();
        if cfg.addresses() != old.config.addresses() {
            changed.push("server.listen / listeners");
        }
        if cfg.redirect_listen != old.config.redirect_listen {
            changed.push("server.redirect_listen");
        }
        if cfg.admin_listen != old.config.admin_listen {
            changed.push("admin.listen");
        }
        if !changed.is_empty() {
            return Err(ReloadError::Listeners(changed.join(", ")));
        }
        // Set up once per process: said, not silently ignored.
        let mut at_start = Vec::new();
        if cfg.log != old.config.log {
            at_start.push("[log]");
        }
        if cfg.workers != old.config.workers {
            at_start.push("server.workers");
        }
        if cfg.limits.max_connections != old.config.limits.max_connections {
            at_start.push("limits.max_connections");
        }
        if !at_start.is_empty() {
            tracing::warn!(
                "{} changed: kept as they were; the new values take effect at the next start",
                at_start.join(", ")
            );
        }
        let gw = Gateway::replacing(cfg, self.metrics.clone(), Some(&old)).await?;
        let hash = gw.config_hash.clone();
        self.metrics.config_loaded(&hash);
        self.metrics.tls_expiry.set(gw.tls_expiry.unwrap_or(0.0));
        self.metrics
            .crl_next_update
            .set(gw.crl_next_update.unwrap_or(0.0));
        self.current.store(Arc::new(gw));
        Ok(hash)
    }
}

/// The SIGHUP handler, installed when this is made. Until a process
/// installs one, SIGHUP's default action ends it: `sharegate run` makes
/// this before it binds and builds (a JWKS fetch may take seconds), so a
/// `systemctl reload` or a log rotation's signal that arrives while it
/// starts is kept and taken as a reload once it serves.
pub struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Installs the handler; call it inside the runtime.
    pub fn install() -> Hangup {
        Hangup {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }
}

/// Reloads on SIGHUP, and (when `reload.watch` is on) when any file the
/// config was built from changes. Runs until the process ends.
pub async fn watch(state: Arc<State>) {
    watch_with(state, Hangup::install()).await;
}

/// [`watch`] with a SIGHUP handler installed earlier (see [`Hangup`]).
pub async fn watch_with(state: Arc<State>, hangup: Hangup) {
    #[cfg(unix)]
    let mut hup = hangup.signal;
    #[cfg(not(unix))]
    let _ = hangup;
    let mut watcher = Watcher::new(&state);
    loop {
        let gw = state.gateway();
        let interval = gw.config.reload.interval;
        let watching = gw.config.reload.watch && state.config_path.is_some();
        drop(gw);
        #[cfg(unix)]
        let signal = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signal = std::future::pending::<()>();
        // Polling a handful of files is cheap and, unlike inotify, sees the
        // symlink swap Kubernetes uses to update a mounted ConfigMap.
        let tick = async {
            if watching {
                tokio::time::sleep(interval).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = signal => {
                tracing::info!("SIGHUP: reloading the config");
                watcher.reload_now(&state, || state.reload()).await;
            }
            _ = tick => {
                watcher.look(&state, || state.reload()).await;
            }
        }
    }
}

/// What the watcher knows of the config's files between looks.
///
/// A change is loaded once the files have stayed as they are for a whole
/// interval (two looks in a row find the same fingerprint): a file caught
/// while an editor or a deploy script is still writing it may hold only the
/// start of the new config, and a start that parses (TOML cut at the end of
/// a line mostly does) would be put in force, without the sections after
/// the cut, until the next look. Waiting costs one interval per change.
///
/// Each fingerprint is taken before the reload reads the files, so an edit
/// that lands while a reload runs is seen at the next look, not taken for
/// the one just loaded. A refused reload is retried only when the files
/// change again.
struct Watcher {
    /// The files as they were when the config in force was read.
    seen: Fingerprint,
    /// A change seen at the last look, waiting to be found again.
    settling: Option<Fingerprint>,
}

impl Watcher {
    fn new(state: &State) -> Watcher {
        Watcher {
            seen: fingerprint(&state.gateway().config.files),
            settling: None,
        }
    }

    /// One look at the files: `reload` once they differ from the config in
    /// force and are the same as at the last look.
    async fn look<F, Fut>(&mut self, state: &State, reload: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future,
    {
        let files = state.gateway().config.files.clone();
        let now = fingerprint(&files);
        if now == self.seen {
            self.settling = None;
            return;
        }
        if self.settling.as_ref() != Some(&now) {
            self.settling = Some(now);
            return;
        }
        tracing::info!("a config file changed: reloading");
        reload().await;
        self.seen = seen_after_reload(state, &files, now);
        self.settling = None;
    }

    /// A reload asked for (SIGHUP): at once, whatever the files look like.
    async fn reload_now<F, Fut>(&mut self, state: &State, reload: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future,
    {
        let files = state.gateway().config.files.clone();
        let before = fingerprint(&files);
        reload().await;
        self.seen = seen_after_reload(state, &files, before);
        self.settling = None;
    }
}

type Fingerprint = Vec<Option<(SystemTime, u64)>>;

/// What the watcher compares against after a reload: the fingerprint taken
/// before it (`before`, of `files`) while the config still names the same
/// files; a fresh one of the new set when a reload changed which files it
/// names.
fn seen_after_reload(state: &State, files: &[PathBuf], before: Fingerprint) -> Fingerprint {
    let gw = state.gateway();
    if gw.config.files == files {
        before
    } else {
        fingerprint(&gw.config.files)
    }
}

/// Modification time and length of every file (or `None` when unreadable).
fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files.iter().map(|f| stat(f)).collect()
}

fn stat(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(revoked: &str) -> String {
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[share]\nrevoked_tokens = [{revoked}]\n[admin]\nlisten = \"off\"\n"
        )
    }

    fn revoked(state: &State) -> usize {
        state.gateway().config.policy.revoked_tokens.len()
    }

    /// A look that must not reload (`why` says what it would have loaded).
    async fn quiet_look(watcher: &mut Watcher, state: &State, why: &'static str) {
        watcher.look(state, || async move { panic!("{why}") }).await;
    }

    /// A look that must reload, and the reload go through.
    async fn reloading_look(watcher: &mut Watcher, state: &State) {
        watcher
            .look(state, || async {
                state.reload().await.unwrap();
            })
            .await;
    }

    async fn state_for(path: &Path) -> State {
        let cfg = Config::load(path).unwrap();
        let metrics = Arc::new(Metrics::new());
        let gw = Gateway::build(cfg, metrics.clone()).await.unwrap();
        State::new(gw, metrics, Some(path.to_owned()))
    }

    /// An edit that lands while a reload runs (after the reload has read the
    /// files) is loaded once it has settled, not taken for the one just
    /// loaded. Each version has its own length, so the fingerprints differ
    /// whatever the file system's clock granularity.
    #[tokio::test]
    async fn an_edit_during_a_reload_is_loaded_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sharegate.toml");
        std::fs::write(&path, policy("")).unwrap();
        let state = state_for(&path).await;
        let mut watcher = Watcher::new(&state);

        // Nothing changed: no reload.
        quiet_look(&mut watcher, &state, "reloaded unchanged files").await;

        std::fs::write(&path, policy("\"a\"")).unwrap();
        quiet_look(&mut watcher, &state, "reloaded a change seen once").await;
        watcher
            .look(&state, || async {
                state.reload().await.unwrap();
                // The edit lands once the reload has read the file.
                std::fs::write(&path, policy("\"a\", \"b\"")).unwrap();
            })
            .await;
        assert_eq!(revoked(&state), 1, "the version the reload read");

        quiet_look(&mut watcher, &state, "reloaded a change seen once").await;
        reloading_look(&mut watcher, &state).await;
        assert_eq!(revoked(&state), 2, "the edit made during the reload");
        quiet_look(&mut watcher, &state, "reloaded the same files again").await;
    }

    /// A config file caught half-written is not loaded, even when the part
    /// written so far is a config of its own: only what stays put for a
    /// whole interval is.
    #[tokio::test]
    async fn a_config_caught_half_written_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sharegate.toml");
        let whole = policy("\"a\", \"b\", \"c\"");
        std::fs::write(&path, policy("")).unwrap();
        let state = state_for(&path).await;
        let mut watcher = Watcher::new(&state);

        // The writer has got as far as the end of a line that leaves the
        // revocations out; the next look finds the file whole.
        let cut = whole.find("[share]").unwrap();
        std::fs::write(&path, format!("{}\n", &whole[..cut])).unwrap();
        quiet_look(&mut watcher, &state, "loaded a half-written file").await;
        std::fs::write(&path, &whole).unwrap();
        quiet_look(&mut watcher, &state, "loaded a file still changing").await;
        reloading_look(&mut watcher, &state).await;
        assert_eq!(revoked(&state), 3);

        // SIGHUP does not wait.
        std::fs::write(&path, policy("")).unwrap();
        watcher
            .reload_now(&state, || async {
                state.reload().await.unwrap();
            })
            .await;
        assert_eq!(revoked(&state), 0);
        quiet_look(&mut watcher, &state, "reloaded what SIGHUP loaded").await;
    }
}
