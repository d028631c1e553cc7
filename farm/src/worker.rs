//! `autogentoo worker`: a build host. It enrolls once with a one-time key (keeping the host
//! credential it gets, readable by root only), says what it can build, takes jobs, and runs
//! each as `autogentoo build SYSTEM --json` of its own workdir and backend, with the job's
//! site config snapshot, the stages and repository snapshot the farm hands out for it
//! ([`crate::inputs`]), and the farm's binhost of the job's arch on loopback for its roots
//! ([`crate::binhost_proxy`]). The build's events stream to the server as they come; at its
//! end the artifacts and the binary packages it made are uploaded by content, then the host's
//! own record of the build is the result.
//!
//! The host never holds the database's credentials: its build records into its own SQLite,
//! and the server copies what it reports. A build runs in a process of its own that dies with
//! the worker, so a killed worker leaves no build behind to race its redelivery.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use autogentoo_db::{Build, BuildDetail, Database, Location, Outcome};
use reqwest::StatusCode;

use crate::api_types::{
    Capabilities, EnrollRequest, Enrolled, HostArch, Lease, LeaseRequest, Liveness, Package,
    Published,
};
use crate::client::{Client, ClientError};
use crate::secret;

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "this host is not enrolled ({} is missing): give --enroll-key-file with a key from \
         `autogentoo farm key create`",
        .0.display()
    )]
    NotEnrolled(PathBuf),
    #[error("cannot read the secret in {}", path.display())]
    Secret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "this host cannot build {arch}: it builds {can} (a foreign arch needs its qemu-user \
         handler registered with the F flag; see `autogentoo workdir status`)"
    )]
    CannotBuild { arch: String, can: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot run a build of job {job}")]
    Spawn {
        job: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Site(#[from] crate::site::SiteError),
    #[error("the binhost: {0}")]
    Binhost(String),
    #[error("cannot use the binary package cache at {}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] autogentoo_db::DbError),
}

/// How the worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub server: String,
    pub ca: Option<PathBuf>,
    /// The host's name on the farm (used when enrolling).
    pub name: String,
    pub workdir: PathBuf,
    pub backend: String,
    /// The autogentoo program that runs builds.
    pub program: PathBuf,
    /// A one-time enrollment key, for the first start.
    pub enroll_key_file: Option<PathBuf>,
    /// What it can build.
    pub capabilities: Capabilities,
    /// The host's own build database (SQLite), where its builds are recorded.
    pub database: PathBuf,
    /// Where the host keeps its credential (mode 0600).
    pub credential: PathBuf,
}

/// What the host can build as things stand: the arches it runs natively or through qemu-user
/// (binfmt_misc with the F flag), of `only` when it names some, its backend, and one slot.
pub fn detect_capabilities(backend: &str, only: &[String]) -> Result<Capabilities, WorkerError> {
    let runnable = autogentoo_core::chroot::binfmt::runnable();
    for wanted in only {
        if !runnable.iter().any(|r| r.arch == wanted.as_str()) {
            let can: Vec<&str> = runnable.iter().map(|r| r.arch).collect();
            return Err(WorkerError::CannotBuild {
                arch: wanted.clone(),
                can: can.join(", "),
            });
        }
    }
    Ok(Capabilities {
        arches: runnable
            .into_iter()
            .filter(|r| only.is_empty() || only.iter().any(|o| o == r.arch))
            .map(|r| HostArch {
                arch: r.arch.to_owned(),
                native: r.through == "native",
            })
            .collect(),
        backends: vec![backend.to_owned()],
        free_slots: 1,
    })
}

/// How long a lease request waits at the server for work: an idle host asks six times a
/// minute, and hears of a new job as it is submitted; a stopping worker waits at most this.
const LEASE_WAIT: Duration = Duration::from_secs(10);

/// Runs the worker until `stop` is set.
pub fn run(options: &WorkerOptions, stop: &Arc<AtomicBool>) -> Result<(), WorkerError> {
    crate::inputs::sweep_downloads(&options.workdir);
    let anonymous = Client::new(&options.server, options.ca.as_deref(), None)?;
    let credential = credential(options, &anonymous)?;
    let host = anonymous.with_secret(credential);
    let liveness: Liveness = retry(stop, || host.post("/hosts/hello", &()))?
        .flatten()
        .unwrap_or(Liveness {
            heartbeat_ms: 10_000,
            dead_after_ms: 30_000,
        });
    let busy = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(AtomicBool::new(false));
    let beat = {
        let (host, caps, busy, stopping) = (
            host.clone(),
            options.capabilities.clone(),
            busy.clone(),
            stopping.clone(),
        );
        std::thread::spawn(move || heartbeats(&host, caps, liveness, &busy, &stopping))
    };
    eprintln!(
        "worker '{}' takes jobs from {}",
        options.name, options.server
    );
    let mut wait = Duration::from_millis(250);
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        let request = LeaseRequest {
            capabilities: Capabilities {
                free_slots: 1,
                ..options.capabilities.clone()
            },
            wait_ms: LEASE_WAIT.as_millis() as u64,
        };
        match host.post::<_, Lease>("/hosts/lease", &request) {
            Ok(Some(lease)) => {
                wait = Duration::from_millis(250);
                busy.store(true, Ordering::SeqCst);
                let ran = run_job(options, &host, lease, stop);
                busy.store(false, Ordering::SeqCst);
                if let Err(error) = ran {
                    eprintln!("worker: {}", one_line(&error));
                }
            }
            // The server waited for work before it said there is none.
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(error) if error.status() == Some(StatusCode::UNAUTHORIZED) => {
                break Err(error.into())
            }
            Err(error) => {
                eprintln!("worker: {}", one_line(&error));
                std::thread::sleep(backoff(wait));
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    stopping.store(true, Ordering::SeqCst);
    let _ = beat.join();
    result
}

/// The host credential: kept from an earlier start, or got now with the enrollment key.
fn credential(options: &WorkerOptions, client: &Client) -> Result<String, WorkerError> {
    let path = options.credential.clone();
    if path.exists() {
        return secret::read_file(&path).map_err(|source| WorkerError::Secret { path, source });
    }
    let Some(key_file) = &options.enroll_key_file else {
        return Err(WorkerError::NotEnrolled(path));
    };
    let key = secret::read_file(key_file).map_err(|source| WorkerError::Secret {
        path: key_file.clone(),
        source,
    })?;
    let enrolled: Enrolled = client
        .post(
            "/hosts/enroll",
            &EnrollRequest {
                key,
                name: options.name.clone(),
            },
        )?
        .ok_or_else(|| ClientError::Refused {
            what: "the enrollment".into(),
            status: StatusCode::NO_CONTENT,
            message: "no credential came back".into(),
        })?;
    secret::write_file(&path, &enrolled.secret).map_err(|source| WorkerError::Secret {
        path: path.clone(),
        source,
    })?;
    eprintln!("enrolled as '{}'", enrolled.host);
    Ok(enrolled.secret)
}

/// Says the host is alive every heartbeat interval, until `stopping`.
fn heartbeats(
    host: &Client,
    caps: Capabilities,
    liveness: Liveness,
    busy: &AtomicBool,
    stopping: &AtomicBool,
) {
    let every = Duration::from_millis(liveness.heartbeat_ms.max(100));
    while !stopping.load(Ordering::SeqCst) {
        let caps = Capabilities {
            free_slots: u32::from(!busy.load(Ordering::SeqCst)),
            ..caps.clone()
        };
        if let Err(error) = host.post::<_, Liveness>("/hosts/heartbeat", &caps) {
            eprintln!("worker: heartbeat: {}", one_line(&error));
        }
        let mut slept = Duration::ZERO;
        while slept < every && !stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            slept += Duration::from_millis(100);
        }
    }
}

/// Runs one job to its end and reports it.
fn run_job(
    options: &WorkerOptions,
    host: &Client,
    lease: Lease,
    stop: &Arc<AtomicBool>,
) -> Result<(), WorkerError> {
    let heartbeat_ms = lease.liveness.heartbeat_ms;
    let job = lease.job;
    let client = host.with_secret(lease.secret);
    eprintln!(
        "job {}: build '{}' (attempt {})",
        job.id, job.system, job.attempt
    );
    let site = options
        .workdir
        .join("farm")
        .join("sites")
        .join(&job.config_hash);
    if !site.exists() {
        let bytes = retry(stop, || client.get_bytes(&format!("/jobs/{}/site", job.id)))?;
        crate::site::unpack(&bytes, &job.config_hash, &site)?;
    }
    // The stages, kernel sources and repository snapshot the farm hands out for this job.
    let repo_image = match provide_inputs(options, &client, &job, stop) {
        Ok(repo) => repo,
        Err(_) if stop.load(Ordering::SeqCst) => {
            let _ = host.post::<_, Liveness>("/hosts/hello", &());
            eprintln!(
                "job {}: the worker stops; the job goes back to the queue",
                job.id
            );
            return Ok(());
        }
        Err(error) => {
            let why = one_line(&error);
            eprintln!("job {}: {why}", job.id);
            let result = crate::api_types::JobResult {
                record: serde_json::to_value(unrecorded(&job.system, 0, why)).unwrap_or_default(),
                logs: Vec::new(),
            };
            retry(stop, || {
                client.post::<_, serde_json::Value>(&format!("/jobs/{}/result", job.id), &result)
            })?;
            return Ok(());
        }
    };
    // The binhost of the job's arch, on loopback for the build's roots (`--getbinpkg`).
    let cache = binpkgs_cache(options, &job.arch);
    let binhost = match crate::binhost_proxy::BinhostProxy::start(host.clone(), &job.arch) {
        Ok(binhost) => Some(binhost),
        Err(error) => {
            eprintln!("job {}: no binhost for the build: {error}", job.id);
            None
        }
    };
    let mut command = Command::new(&options.program);
    command
        .arg("--workdir")
        .arg(&options.workdir)
        .arg("--backend")
        .arg(&options.backend)
        .arg("--config")
        .arg(site.join("autogentoo.toml"))
        .args(["--json", "build", &job.system])
        .args(repo_image.iter().flat_map(|name| ["--repo-image", name]))
        .args(binhost.iter().flat_map(|b| ["--binhost", b.url()]))
        // The host's own database, whatever the site config says: a host never holds the
        // farm database's credentials.
        .env(autogentoo_db::URL_VAR, database_url(options))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = die_with_parent(&mut command)
        .spawn()
        .map_err(|source| WorkerError::Spawn {
            job: job.id.clone(),
            source,
        })?;
    let pid = i64::from(child.id());
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    // The build's stderr goes on to the worker's; its last lines explain a failure.
    let tail = Arc::new(Mutex::new(Vec::<String>::new()));
    let tail_thread = stderr.map(|stderr| {
        let tail = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  {line}");
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                tail.push(line);
                if tail.len() > 5 {
                    tail.remove(0);
                }
            }
        })
    });
    // Events go to the server from a thread of their own, so a slow server never blocks the
    // build's output; a lost lease stops the build.
    let (send, receive) = mpsc::channel::<String>();
    let lost = Arc::new(AtomicBool::new(false));
    // A worker told to stop stops its build too, even one that prints nothing for hours.
    let ended = Arc::new(AtomicBool::new(false));
    // It asks the server every heartbeat interval whether the lease holds, so that a job
    // cancelled or given to another host stops even while its build prints nothing.
    let watcher = {
        let (ended, stop, lost, child) = (ended.clone(), stop.clone(), lost.clone(), child.id());
        let (client, lease) = (client.clone(), format!("/jobs/{}/lease", job.id));
        let every = Duration::from_millis(heartbeat_ms.max(500));
        std::thread::spawn(move || {
            let mut since = Duration::ZERO;
            while !ended.load(Ordering::SeqCst) {
                if stop.load(Ordering::SeqCst) || lost.load(Ordering::SeqCst) {
                    stop_build(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
                since += Duration::from_millis(200);
                if since >= every {
                    since = Duration::ZERO;
                    if let Err(e) = client.get_status(&lease) {
                        if matches!(e.status(), Some(s) if s == StatusCode::CONFLICT || s == StatusCode::UNAUTHORIZED)
                        {
                            eprintln!("{}", one_line(&e));
                            lost.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }
        })
    };
    let poster = {
        let (client, id, lost) = (client.clone(), job.id.clone(), lost.clone());
        std::thread::spawn(move || post_events(&client, &id, &receive, &lost))
    };
    if let Some(stdout) = stdout {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = send.send(line);
            if lost.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
                stop_build(child.id());
                break;
            }
        }
    }
    drop(send);
    let status = child.wait();
    ended.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    let _ = poster.join();
    if let Some(thread) = tail_thread {
        let _ = thread.join();
    }
    if let Some(binhost) = binhost {
        let n = binhost.packages_served();
        if n > 0 {
            eprintln!(
                "job {}: {n} binary packages from the {} binhost",
                job.id, job.arch
            );
        }
    }
    if lost.load(Ordering::SeqCst) {
        eprintln!("job {}: the lease was lost; the build was stopped", job.id);
        return Ok(());
    }
    if stop.load(Ordering::SeqCst) {
        // Stopping is not failing: the job goes back to the queue for another host (or for
        // this one when it starts again), rather than being reported as a failed build.
        let _ = host.post::<_, Liveness>("/hosts/hello", &());
        eprintln!(
            "job {}: the worker stops; the job goes back to the queue",
            job.id
        );
        return Ok(());
    }
    let db = Database::open(&Location::Sqlite(options.database.clone()))?;
    let record = db
        .list(Some(&job.system), 1)?
        .into_iter()
        .find(|b| b.pid == pid)
        .map(|b| db.get(&b.system, b.number))
        .transpose()?;
    let (record, logs) = match record {
        Some(record) => {
            let logs = db.logs(&record.build.system, record.build.number, None)?;
            (record, logs)
        }
        None => {
            // With --json the build's error is a JSON object on its last line.
            let last = tail
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last()
                .cloned();
            let why = last
                .map(|line| {
                    serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_owned))
                        .unwrap_or(line)
                })
                .unwrap_or_else(|| format!("the build ended with {status:?} before it began"));
            (unrecorded(&job.system, pid, why), Vec::new())
        }
    };
    drop(db);
    for artifact in &record.artifacts {
        retry(stop, || {
            client.upload_artifact(&job.id, &artifact.path, &artifact.sha256)
        })?;
    }
    // What the build added to the cache, for the other hosts.
    if let (Some(cache), Outcome::Succeeded) = (&cache, record.build.outcome) {
        match publish_packages(host, &client, &job.id, &job.arch, cache) {
            Ok(0) => {}
            Ok(n) => eprintln!(
                "job {}: {n} binary packages to the {} binhost",
                job.id, job.arch
            ),
            Err(error) => eprintln!("job {}: binhost: {}", job.id, one_line(&error)),
        }
    }
    let result = crate::api_types::JobResult {
        record: serde_json::to_value(&record).unwrap_or_default(),
        logs,
    };
    match retry(stop, || {
        client.post::<_, serde_json::Value>(&format!("/jobs/{}/result", job.id), &result)
    }) {
        Ok(_) => {
            eprintln!("job {}: {}", job.id, record.build.outcome);
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Makes the job's inputs ready in the host's workdir, waiting for a server that cannot be
/// reached; returns the repository snapshot the build mounts, when the job names one.
fn provide_inputs(
    options: &WorkerOptions,
    client: &Client,
    job: &crate::api_types::Job,
    stop: &AtomicBool,
) -> Result<Option<String>, crate::inputs::InputError> {
    let host = crate::inputs::HostWorkdir {
        program: &options.program,
        workdir: &options.workdir,
        backend: &options.backend,
        database_url: database_url(options),
    };
    let mut wait = Duration::from_millis(200);
    loop {
        match crate::inputs::provide(&host, client, job) {
            Err(crate::inputs::InputError::Client(error @ ClientError::Connect { .. }))
                if !stop.load(Ordering::SeqCst) =>
            {
                eprintln!("worker: {} (retrying)", one_line(&error));
                std::thread::sleep(backoff(wait));
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            done => return done,
        }
    }
}

/// The host's own database, for the commands the worker runs: a host never holds the farm
/// database's credentials, and never records into the server's.
fn database_url(options: &WorkerOptions) -> String {
    format!("sqlite://{}", options.database.display())
}

/// The host's binary package cache for `arch`, as `workdir status` names it: `binpkgs` for the
/// host's own arch, `binpkgs-ARCH` for another (`None` when it has none yet).
fn binpkgs_cache(options: &WorkerOptions, arch: &str) -> Option<PathBuf> {
    let output = Command::new(&options.program)
        .arg("--workdir")
        .arg(&options.workdir)
        .args(["--backend", &options.backend, "--json", "workdir", "status"])
        .env(autogentoo_db::URL_VAR, database_url(options))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let name = if autogentoo_core::arch::Arch::host().gentoo == arch {
        "binpkgs".to_owned()
    } else {
        format!("binpkgs-{arch}")
    };
    status["caches"][&name].as_str().map(PathBuf::from)
}

/// Uploads the packages in `cache` that `arch`'s binhost lacks, as job `job`'s, and publishes
/// them; returns how many were new to it.
fn publish_packages(
    host: &Client,
    client: &Client,
    job: &str,
    arch: &str,
    cache: &std::path::Path,
) -> Result<usize, WorkerError> {
    use sha2::Digest;
    let index: Vec<Package> = host.get(&format!("/binhost/{arch}"))?;
    let known: std::collections::BTreeSet<String> = index.into_iter().map(|p| p.path).collect();
    let local = crate::binhost::list(cache).map_err(|source| WorkerError::Cache {
        path: cache.to_owned(),
        source,
    })?;
    // Portage's own index of the cache, for each package's entry in the binhost's.
    let index = match std::fs::read_to_string(cache.join("Packages")) {
        Ok(text) => crate::binhost::Index::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => crate::binhost::Index::parse(""),
        Err(source) => {
            return Err(WorkerError::Cache {
                path: cache.join("Packages"),
                source,
            })
        }
    };
    let mut packages = Vec::new();
    for (path, file) in local {
        if known.contains(&path) {
            continue;
        }
        let read = |source| WorkerError::Cache {
            path: file.clone(),
            source,
        };
        let mut hasher = sha2::Sha256::new();
        let size = std::io::copy(&mut std::fs::File::open(&file).map_err(read)?, &mut hasher)
            .map_err(read)?;
        let sha256 = secret::hex(&hasher.finalize());
        client.upload_artifact(job, &file, &sha256)?;
        let metadata = index.entry(&path).unwrap_or_default();
        if metadata.is_empty() {
            eprintln!("job {job}: {path} is not in the cache's Packages index; Portage clients of the binhost will not see it");
        }
        packages.push(Package {
            path,
            sha256,
            size,
            metadata,
        });
    }
    if packages.is_empty() {
        return Ok(0);
    }
    let published: Option<Published> = client.post(&format!("/jobs/{job}/packages"), &packages)?;
    Ok(published.map_or(0, |p| p.added.len()))
}

/// A failed build that ended before it was recorded (its site config did not load, say).
fn unrecorded(system: &str, pid: i64, why: String) -> BuildDetail {
    let now = autogentoo_db::now_ms();
    BuildDetail {
        build: Build {
            system: system.to_owned(),
            number: 0,
            host: String::new(),
            started_by: String::new(),
            pid,
            started_at: now,
            ended_at: Some(now),
            outcome: Outcome::Failed,
            error: Some(why),
            config_hash: String::new(),
            stage: String::new(),
            repo: String::new(),
            packages: Vec::new(),
            inputs: String::new(),
            out_dir: PathBuf::new(),
            kept: false,
        },
        steps: Vec::new(),
        artifacts: Vec::new(),
        contents: None,
    }
}

/// Posts the events received, as many at a time as have come, until the sender is gone. A
/// server that is away is waited for; one that says the lease is lost sets `lost`.
fn post_events(client: &Client, job: &str, receive: &mpsc::Receiver<String>, lost: &AtomicBool) {
    let path = format!("/jobs/{job}/events");
    while let Ok(first) = receive.recv() {
        let mut batch = first;
        while let Ok(more) = receive.try_recv() {
            batch.push('\n');
            batch.push_str(&more);
        }
        let mut wait = Duration::from_millis(200);
        loop {
            match client.post_text(&path, "application/x-ndjson", batch.clone()) {
                Ok(()) => break,
                Err(e) if matches!(e.status(), Some(s) if s == StatusCode::CONFLICT || s == StatusCode::UNAUTHORIZED) =>
                {
                    eprintln!("job {job}: {}", one_line(&e));
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(e) => {
                    eprintln!("job {job}: events: {}", one_line(&e));
                    std::thread::sleep(backoff(wait));
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Calls `call` until it succeeds, waiting longer each time the server cannot be reached;
/// a refusal is returned at once.
fn retry<T>(
    stop: &AtomicBool,
    mut call: impl FnMut() -> Result<T, ClientError>,
) -> Result<T, WorkerError> {
    let mut wait = Duration::from_millis(200);
    loop {
        match call() {
            Ok(value) => return Ok(value),
            Err(error @ ClientError::Connect { .. }) if !stop.load(Ordering::SeqCst) => {
                eprintln!("worker: {} (retrying)", one_line(&error));
                std::thread::sleep(backoff(wait));
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// `wait`, with up to a quarter of it added at random, so that many hosts do not retry in step.
fn backoff(wait: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    wait + wait / 4 * u32::from(byte[0]) / 255
}

/// An error with its causes, on one line.
pub fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// The build dies with the worker: SIGKILL when the worker's main thread, which starts it,
/// ends.
fn die_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe, and the only call between fork and exec.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        })
    }
}

/// Stops a build and what it started (its process group), as Ctrl-C would.
fn stop_build(child: u32) {
    let pid = i32::try_from(child)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::INT);
    }
}
