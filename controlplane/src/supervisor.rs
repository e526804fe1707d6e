//! Spawn mode: start the dataplane, restart it with back-off when it dies.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::api::App;
use crate::state::Ended;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A dataplane that ran this long resets the back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// The dataplane executable: the flag, or `dataplane` beside this binary.
pub fn dataplane_bin(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("dataplane")))
            .unwrap_or_else(|| PathBuf::from("dataplane"))
    })
}

pub async fn supervise(app: Arc<App>, bin: PathBuf, args: Vec<String>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if app.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(&args).kill_on_drop(true);
        // The limits go as flags, resolved here (and the deprecation said
        // here, once): the deprecated per-IP variable (which may also come
        // from the config file) would only make the dataplane say it again.
        cmd.env_remove("MGW_RTMP_MAX_CONNS_PER_IP");
        // The dataplane checks RTMP room tokens; the secret goes by
        // environment, not argv (argv shows in `ps`).
        if let Some(secret) = &app.cfg.token_secret {
            cmd.env("MGW_TOKEN_SECRET", secret);
        }
        // SAFETY: prctl is async-signal-safe; it asks the kernel to stop the
        // dataplane if we die, so spawn mode never leaves an orphan behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                app.dataplane_pid.store(pid, Ordering::SeqCst);
                app.dataplane_running.store(true, Ordering::SeqCst);
                info!(pid, bin = %bin.display(), "dataplane started");
                let status = child.wait().await;
                app.dataplane_running.store(false, Ordering::SeqCst);
                app.link.dataplane_exited();
                if app.shutting_down.load(Ordering::SeqCst) {
                    return;
                }
                let ended = app
                    .state
                    .lock()
                    .expect("state lock")
                    .end_all(Ended::DataplaneExited);
                app.restarts.fetch_add(1, Ordering::SeqCst);
                warn!(
                    ?status,
                    ended, "dataplane exited; sessions marked ended, restarting in {backoff:?}"
                );
            }
            Err(e) => {
                error!(bin = %bin.display(), "cannot start dataplane: {e}; retrying in {backoff:?}")
            }
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Asks the spawned dataplane to stop (SIGTERM) and waits briefly.
pub async fn stop_dataplane(app: &App) {
    let pid = app.dataplane_pid.load(Ordering::SeqCst);
    if pid == 0 {
        return;
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    for _ in 0..40 {
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::kill(pid as i32, 0) } != 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
