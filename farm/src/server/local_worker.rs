//! `serve`'s own build host, for one machine: a worker on a thread of the server's process that
//! builds in the server's workdir, as `autogentoo worker` would. It reaches the server as any
//! host does, through the API, on loopback in plain HTTP. The first time, and whenever the
//! server does not know its credential (a new database), it enrolls with a key the server makes
//! for it in the database directly. Its credential is kept in the server's directory: a build
//! host's credential in the same workdir is never touched.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{AppState, ServeError};
use crate::api_types::Capabilities;
use crate::worker::{self, WorkerError, WorkerOptions};

/// What the server's own worker is.
#[derive(Clone, Debug)]
pub struct LocalWorker {
    /// Its name on the farm.
    pub name: String,
    pub workdir: PathBuf,
    pub backend: String,
    /// The autogentoo program that runs builds.
    pub program: PathBuf,
    pub capabilities: Capabilities,
}

/// The server's worker, running.
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), WorkerError>>,
}

/// How long the key the server makes for its own worker is good for: it enrolls at once.
const KEY_LIFETIME: Duration = Duration::from_secs(600);

/// Starts `local` against the server listening at `at` (plain HTTP, loopback).
pub async fn start(
    state: &AppState,
    local: &LocalWorker,
    at: SocketAddr,
) -> Result<Running, ServeError> {
    let mut options = WorkerOptions {
        server: format!("http://{at}"),
        ca: None,
        name: local.name.clone(),
        workdir: local.workdir.clone(),
        backend: local.backend.clone(),
        program: local.program.clone(),
        enroll_key_file: None,
        capabilities: local.capabilities.clone(),
        // Apart from the workdir's database, which is the server's here: the server records
        // each job's build there itself.
        database: local.workdir.join("farm").join("local-worker.db"),
        credential: state.data_dir.join("local-worker.credential"),
    };
    let known = match crate::secret::read_file(&options.credential) {
        Ok(secret) => state
            .store
            .host_of(&secret)
            .await
            .map_err(ServeError::LocalKey)?
            .is_some(),
        Err(_) => false,
    };
    if !known {
        // Unknown to this database: enrolled with another one. Enrolling again under the same
        // name is refused if this database has a host of that name, revoked or not.
        let _ = std::fs::remove_file(&options.credential);
        let (id, key, _) = state
            .store
            .create_key(KEY_LIFETIME.as_millis() as i64, "serve")
            .await
            .map_err(ServeError::LocalKey)?;
        state
            .store
            .audit("serve", "key create", &id, "for the server's own worker")
            .await
            .map_err(ServeError::LocalKey)?;
        let file = state.data_dir.join("local-worker.key");
        crate::secret::write_file(&file, &key).map_err(|e| ServeError::DataDir(file.clone(), e))?;
        options.enroll_key_file = Some(file);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("local-worker".into())
            .spawn(move || {
                let ran = worker::run(&options, &stop);
                if let Some(key) = &options.enroll_key_file {
                    let _ = std::fs::remove_file(key);
                }
                ran
            })
            .map_err(ServeError::Runtime)?
    };
    Ok(Running { stop, thread })
}

impl Running {
    /// Waits until the worker ends on its own (it could not enroll, say).
    pub async fn ended(&self) {
        while !self.thread.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the worker (a job it runs is stopped and given back) and waits for it; returns
    /// why it failed, if it did.
    pub async fn stop(self) -> Option<String> {
        self.stop.store(true, Ordering::SeqCst);
        let joined = tokio::task::spawn_blocking(move || self.thread.join()).await;
        match joined {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(error))) => Some(crate::worker::one_line(&error)),
            Ok(Err(_)) | Err(_) => Some("the server's own worker panicked".to_owned()),
        }
    }
}
