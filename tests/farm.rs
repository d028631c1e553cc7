//! The build farm, for real: a private PostgreSQL cluster, `autogentoo serve` over TLS, and
//! three build hosts (`autogentoo worker`), each a separate process in a network namespace of
//! its own, joined to the server by a veth pair on a bridge this test makes. The systems are
//! quick ones (no kernel), so that faults can be put in mid-build: a host killed, a host's link
//! cut past its lease, the server restarted; one system with a kernel shows the whole path once,
//! its EFI image downloaded from the server and booted. And the refusals: a used or expired key,
//! a revoked host, a job credential used for another job, a viewer submitting, a forged or
//! missing token.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use autogentoo_tests::postgres::{free_port, PrivatePostgres};
use autogentoo_tests::{
    arm64_busybox, build_busybox_tree_of, busybox_workdir, example_repo, isolated_binary,
    portage_stage, run_tool, wait_until, Run, Workdir, KERNEL_SOURCE_TARBALL,
};
use serde_json::Value;

/// The quick systems the farm builds.
const QUICK: [&str; 6] = [
    "quick-a", "quick-b", "quick-c", "quick-d", "quick-e", "quick-f",
];

/// The systems whose builds sleep long enough to be interrupted.
const SLOW: [&str; 4] = ["slow-kill", "slow-stop", "slow-cut", "slow-restart"];

/// The systems that emerge `app-misc/hello`: the first on one host, the second on another.
const HELLO: [&str; 2] = ["hello-first", "hello-second"];

/// The system with a kernel, and what its /init says when it boots.
const WITH_KERNEL: &str = "with-kernel";
const BOOTED: &str = "booted the image the farm built";

/// The site config's systems: each quick one writes its name; each slow one sleeps 8 s first.
fn systems() -> String {
    let stanza = |name: &str, commands: &str| {
        format!("[systems.{name}]\nstage = \"busybox\"\nkernel_build = \"none\"\ncommands = {commands}\n")
    };
    let quick = QUICK.iter().map(|name| {
        stanza(
            name,
            &format!(r#"["echo built {name} > /etc/built", "echo a line for the log"]"#),
        )
    });
    let slow = SLOW.iter().map(|name| {
        stanza(
            name,
            r#"["echo started; sleep 8; echo slept > /etc/built"]"#,
        )
    });
    let arm64 = "[systems.tiny-arm64]\nstage = \"arm64-busybox\"\narch = \"arm64\"\n\
                 kernel_build = \"none\"\ncommands = [\"/bin/busybox uname -m > /etc/machine\"]\n";
    // The arm64 busybox tree has no /init: the initramfs starts its shell. Portage must not
    // trust its package index blindly (`-pkgdir-index-trusted`): the worker adds packages from
    // the binhost to the cache, and Portage indexes them as it finds them.
    let settings = "[build]\nbinfmt = \"register\"\n\n[pack]\nrdinit = \"/bin/sh\"\n\n\
                    [mounts]\nrepo = \"var/db/repos/example\"\n\n[build.env]\n\
                    FEATURES = \"buildpkg binpkg-multi-instance -news -pkgdir-index-trusted\"\n\
                    EMERGE_DEFAULT_OPTS = \"--usepkg --binpkg-respect-use=y --quiet-build=y\"\n";
    // Two systems of the Portage stage that emerge the same package.
    let portage = HELLO.iter().map(|name| {
        format!(
            "[systems.{name}]\nstage = \"portage\"\nkernel_build = \"none\"\n\
             commands = [\"emerge app-misc/hello\"]\n"
        )
    });
    // Its /init says so and powers off; the command line names it, over `[pack] rdinit`.
    let with_kernel = format!(
        "[systems.{WITH_KERNEL}]\nstage = \"busybox\"\nkernel = \"linux\"\nkernel_build = \"host\"\n\
         kernel_config = \"kernel/qemu-x86_64.kconfig\"\ncmdline = \"console=ttyS0 rdinit=/init\"\n\
         commands = [\"printf '#!/bin/sh\\\\necho {BOOTED}\\\\n/bin/busybox poweroff -f\\\\n' > /init\", \
         \"/bin/busybox chmod 755 /init\"]\n"
    );
    std::iter::once(settings.to_owned())
        .chain(std::iter::once(with_kernel))
        .chain(quick)
        .chain(slow)
        .chain(std::iter::once(arm64.to_owned()))
        .chain(portage)
        .collect()
}

/// Registers qemu-user's arm64 handler (as `autogentoo` tells an operator to) unless it is:
/// what a host needs to say it can build arm64.
fn ensure_arm64_handler() -> Result<()> {
    let binfmt = Path::new("/proc/sys/fs/binfmt_misc");
    if binfmt.join("qemu-aarch64").exists() {
        return Ok(());
    }
    if !binfmt.join("register").exists() {
        run_tool(
            Command::new("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc"])
                .arg(binfmt),
        )?;
    }
    let line = fs::read("/usr/lib/binfmt.d/qemu-aarch64.conf")
        .context("apt-get install qemu-user-static")?;
    fs::write(binfmt.join("register"), line)?;
    Ok(())
}

/// Seconds between heartbeats, and without one before a host's jobs go to others.
const HEARTBEAT: &str = "1";
const DEAD_AFTER: &str = "4";

/// Numbers the networks this binary makes (their bridges' names).
static NETWORKS: AtomicU8 = AtomicU8::new(0);

/// A bridge in this namespace (the server's side, 10.77.N.1) and a namespace per host, each
/// joined to the bridge by a veth pair. Removed on drop.
struct Network {
    bridge: String,
    subnet: String,
    hosts: Vec<(String, String)>,
}

fn ip(args: &[&str]) -> Result<String> {
    run_tool(Command::new("ip").args(args)).context("apt-get install iproute2")
}

impl Network {
    fn new(hosts: usize) -> Result<Self> {
        let n = NETWORKS.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        // A subnet no interface has: another test binary (or run) may have a farm up too.
        let used = ip(&["-o", "-4", "addr", "show"])?;
        let subnet = (0..=255u8)
            .map(|i| format!("10.77.{i}"))
            .find(|subnet| !used.contains(&format!(" {subnet}.")))
            .context("no free 10.77.N.0/24 subnet for the test's bridge")?;
        let mut network = Self {
            bridge: format!("agb{tag}"),
            subnet,
            hosts: Vec::new(),
        };
        ip(&["link", "add", &network.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", network.subnet),
            "dev",
            &network.bridge,
        ])?;
        ip(&["link", "set", &network.bridge, "up"])?;
        for i in 0..hosts {
            let namespace = format!("agn{tag}h{i}");
            let veth = format!("agv{tag}h{i}");
            ip(&["netns", "add", &namespace])?;
            network.hosts.push((namespace.clone(), veth.clone()));
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
            ])?;
            ip(&["link", "set", &veth, "master", &network.bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            let address = format!("{}.{}/24", network.subnet, 10 + i);
            ip(&["-n", &namespace, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    /// The server's address on the bridge.
    fn server_ip(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// Cuts (or restores) host `i`'s link to the bridge.
    fn set_link(&self, i: usize, up: bool) -> Result<()> {
        ip(&[
            "link",
            "set",
            &self.hosts[i].1,
            if up { "up" } else { "down" },
        ])
        .map(drop)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for (namespace, veth) in &self.hosts {
            let _ = ip(&["link", "del", veth]);
            let _ = ip(&["netns", "del", namespace]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A long-running process of the test (the server, a worker), its output in a log file; killed
/// by its PID on drop.
struct Process {
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn start(mut command: Command, log: PathBuf) -> Result<Self> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        Ok(Self {
            child: Some(child),
            log,
        })
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&mut self, signal: rustix::process::Signal) {
        if let Some(child) = &self.child {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a PID");
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Waits for it to exit (after a signal).
    fn wait(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

/// The last lines of a log, for a failing test's output.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(400)..].join("\n")
}

impl Drop for Process {
    fn drop(&mut self) {
        // Shown only when the test fails (the harness captures it otherwise).
        eprintln!("--- {}:\n{}", self.log.display(), tail(&self.log()));
        self.signal(rustix::process::Signal::KILL);
        self.wait();
    }
}

/// The farm: its database, certificates, site config, server and admin token.
struct Farm {
    _postgres: PrivatePostgres,
    network: Network,
    /// The server's own workdir and the scratch directory beside it.
    server_dir: Workdir,
    site: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    url: String,
    port: u16,
    admin: PathBuf,
    server: Option<Process>,
}

/// Makes a CA and a server certificate for `ip` with openssl, in `dir`.
fn certificates(dir: &Path, ip: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (cert, key, csr) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("server.csr"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run_tool(
        Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca)
            .args(["-days", "2", "-subj", "/CN=test farm CA"]),
    )?;
    run_tool(
        Command::new("openssl")
            .arg("req")
            .args(ec)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .args(["-subj", "/CN=test farm server"]),
    )?;
    let ext = dir.join("san.ext");
    fs::write(&ext, format!("subjectAltName=IP:{ip},IP:127.0.0.1\n"))?;
    run_tool(
        Command::new("openssl")
            .args(["x509", "-req", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-CAcreateserial", "-days", "2", "-out"])
            .arg(&cert)
            .arg("-extfile")
            .arg(&ext),
    )?;
    Ok((ca, cert, key))
}

impl Farm {
    fn start(hosts: usize) -> Result<Self> {
        let postgres = PrivatePostgres::start()?;
        let network = Network::new(hosts)?;
        let server_dir = Workdir::new();
        let scratch = server_dir.scratch();
        let (ca, cert, key) = certificates(&scratch, &network.server_ip())?;
        let site = scratch.join("site");
        fs::create_dir_all(site.join("common/etc"))?;
        fs::create_dir_all(site.join("kernel"))?;
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/kernel/qemu-x86_64.kconfig"),
            site.join("kernel/qemu-x86_64.kconfig"),
        )?;
        fs::write(
            site.join("common/etc/farm"),
            "from the farm's site config\n",
        )?;
        fs::write(
            site.join("autogentoo.toml"),
            format!(
                "{}\n[database]\nurl = \"{}\"\npassword_file = \"{}\"\n",
                systems(),
                postgres.url(),
                postgres.password_file().display()
            ),
        )?;
        let port = free_port()?;
        let url = format!("https://{}:{port}", network.server_ip());
        let admin = scratch.join("admin.token");
        let mut farm = Self {
            _postgres: postgres,
            network,
            server_dir,
            site,
            ca,
            cert,
            key,
            url,
            port,
            admin,
            server: None,
        };
        // The first admin: made in the database directly, on the server's host.
        let made = farm
            .server_dir
            .ok(farm.local_args(["farm", "token", "create", "admin", "--role", "admin"]));
        fs::write(&farm.admin, made.stdout.trim())?;
        farm.start_server()?;
        Ok(farm)
    }

    fn local_args<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut all = vec![
            "--config".to_owned(),
            self.site.join("autogentoo.toml").display().to_string(),
        ];
        all.extend(args.into_iter().map(str::to_owned));
        all
    }

    fn start_server(&mut self) -> Result<()> {
        let listen = format!("{}:{}", self.network.server_ip(), self.port);
        let mut command = self.server_dir.command(self.local_args(["serve"]));
        command
            .args(["--listen", &listen, "--tls-cert"])
            .arg(&self.cert)
            .arg("--tls-key")
            .arg(&self.key)
            .args(["--heartbeat", HEARTBEAT, "--dead-after", DEAD_AFTER])
            .env("AUTOGENTOO_LOG", "info");
        let log = self.server_dir.scratch().join("server.log");
        let before = fs::read_to_string(&log).unwrap_or_default();
        let started = before.matches("serving the farm API").count();
        let server = Process::start(command, log)?;
        wait_until("the server listens", Duration::from_secs(60), || {
            server.log().matches("serving the farm API").count() > started
        });
        self.server = Some(server);
        Ok(())
    }

    /// The binary as a client of the farm, with the token in `token` (or none).
    fn client(&self, token: Option<&Path>) -> Command {
        let mut command = isolated_binary();
        command
            .env("AUTOGENTOO_SERVER", &self.url)
            .env("AUTOGENTOO_CA", &self.ca);
        if let Some(token) = token {
            command.env("AUTOGENTOO_TOKEN_FILE", token);
        }
        command
    }

    /// Runs the binary as a client with `token`.
    fn run_as(&self, token: Option<&Path>, args: &[&str]) -> Run {
        let mut command = self.client(token);
        command.args(args);
        Run::of(command)
    }

    /// Runs the binary as the admin; it must succeed.
    #[track_caller]
    fn admin(&self, args: &[&str]) -> Run {
        let run = self.run_as(Some(&self.admin), args);
        assert!(run.status.success(), "expected success: {}", run.describe());
        run
    }

    /// GET or POST on the API with curl, as `secret`: (status, body).
    fn curl(
        &self,
        method: &str,
        path: &str,
        secret: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut command = Command::new("curl");
        command
            .args([
                "-s",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-X",
                method,
                "--cacert",
            ])
            .arg(&self.ca)
            .arg(format!("{}/api/v1{path}", self.url));
        if let Some(secret) = secret {
            command.args(["-H", &format!("Authorization: Bearer {secret}")]);
        }
        if let Some(body) = body {
            command.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        }
        let out = run_tool(&mut command).expect("curl runs (apt-get install curl)");
        let (body, code) = out.rsplit_once('\n').expect("curl printed the status");
        (code.trim().parse().expect("a status code"), body.to_owned())
    }

    fn builds(&self) -> Vec<Value> {
        let run = self.admin(&["--json", "builds", "list", "--limit", "1000"]);
        run.json().as_array().cloned().expect("a list")
    }

    fn jobs(&self) -> Vec<Value> {
        let secret = fs::read_to_string(&self.admin).unwrap();
        let (code, body) = self.curl("GET", "/jobs?limit=1000", Some(secret.trim()), None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap()
    }

    fn job_of(&self, system: &str) -> Option<Value> {
        self.jobs().into_iter().find(|j| j["system"] == system)
    }

    /// Submits `system` as the admin; returns the job.
    fn submit(&self, system: &str) -> Value {
        self.admin(&["--json", "submit", system]).json()
    }

    /// Waits until `system`'s job has ended; returns it.
    fn wait_ended(&self, system: &str) -> Value {
        self.wait_ended_within(system, Duration::from_secs(240))
    }

    fn wait_ended_within(&self, system: &str, limit: Duration) -> Value {
        wait_until(&format!("the job of {system} ends"), limit, || {
            self.job_of(system)
                .is_some_and(|j| j["state"] == "succeeded" || j["state"] == "failed")
        });
        self.job_of(system).unwrap()
    }

    /// Waits until `system`'s job runs on a host; returns the host.
    fn wait_running(&self, system: &str) -> String {
        wait_until(
            &format!("{system} runs on a host"),
            Duration::from_secs(120),
            || self.job_of(system).is_some_and(|j| j["state"] == "running"),
        );
        self.job_of(system).unwrap()["host"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A one-time enrollment key, written to a file.
    fn key(&self, expires: &str, file: &Path) -> Result<()> {
        let run = self.admin(&["farm", "key", "create", "--expires", expires]);
        fs::write(file, run.stdout.trim())?;
        Ok(())
    }
}

/// A build host: its workdir (with the busybox stage) and its worker, in namespace `i`.
struct Host {
    name: String,
    index: usize,
    arches: String,
    workdir: Workdir,
    worker: Option<Process>,
}

impl Host {
    /// A host taking jobs of `arches` (every arch it can build when empty), with the busybox
    /// stage; for an amd64 host, the Portage stage and the example repository's distfiles. The
    /// arm64 stage and the repository snapshot come from the farm.
    fn new(farm: &Farm, index: usize, arches: &str) -> Result<Self> {
        let workdir = busybox_workdir()?;
        if arches != "arm64" {
            workdir.import(&portage_stage(), "portage");
            let (_, distfiles) = example_repo();
            let status = workdir.ok(["workdir", "status", "--json"]).json();
            let cache = status["caches"]["distfiles"]
                .as_str()
                .expect("a distfiles cache");
            run_tool(Command::new(distfiles).arg(cache))?;
        }
        let key = workdir.scratch().join("enroll.key");
        farm.key("1h", &key)?;
        let mut host = Self {
            name: format!("host-{index}"),
            index,
            arches: arches.to_owned(),
            workdir,
            worker: None,
        };
        host.start(farm, Some(&key))?;
        Ok(host)
    }

    /// Starts the worker in the host's namespace (enrolling with `key` the first time).
    fn start(&mut self, farm: &Farm, key: Option<&Path>) -> Result<()> {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &farm.network.hosts[self.index].0]);
        let worker = self
            .workdir
            .command(["--backend", "dir", "worker", "--name", &self.name]);
        command.arg(worker.get_program()).args(worker.get_args());
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        command.args(["--server", &farm.url, "--ca"]).arg(&farm.ca);
        if let Some(key) = key {
            command.arg("--enroll-key-file").arg(key);
        }
        if !self.arches.is_empty() {
            command.args(["--arches", &self.arches]);
        }
        let log = self.workdir.scratch().join("worker.log");
        let started = fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("takes jobs from")
            .count();
        let worker = Process::start(command, log)?;
        wait_until(
            &format!("{} takes jobs", self.name),
            Duration::from_secs(60),
            || worker.log().matches("takes jobs from").count() > started,
        );
        self.worker = Some(worker);
        Ok(())
    }

    fn log(&self) -> String {
        self.worker.as_ref().map(Process::log).unwrap_or_default()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Refusals before any host runs: a host made up with curl takes two jobs, and its credentials
/// are tried where they do not belong. Each refusal changes nothing.
fn refusals(farm: &Farm, scratch: &Path) -> Result<()> {
    // A forged token, and none at all.
    let forged = scratch.join("forged.token");
    fs::write(&forged, format!("agt_{}", "0".repeat(64)))?;
    let run = farm.run_as(Some(&forged), &["builds", "list"]);
    run.expect_one_error();
    ensure!(run.stderr.contains("not known"), "{}", run.describe());
    let run = farm.run_as(None, &["submit", "quick-a"]);
    run.expect_one_error();
    ensure!(run.stderr.contains("no credential"), "{}", run.describe());

    // A viewer may read, not submit.
    let viewer = scratch.join("viewer.token");
    let made = farm.admin(&["farm", "token", "create", "watcher", "--role", "viewer"]);
    fs::write(&viewer, made.stdout.trim())?;
    farm.run_as(Some(&viewer), &["builds", "list"])
        .expect_code(0);
    let run = farm.run_as(Some(&viewer), &["submit", "quick-a"]);
    run.expect_one_error();
    ensure!(
        run.stderr.contains("needs the operator role"),
        "{}",
        run.describe()
    );
    ensure!(farm.jobs().is_empty(), "a refused submission queued a job");
    let inputs = add_inputs(farm, scratch, &viewer)?;

    // A host enrolls by hand, and takes the two jobs there are.
    let key = scratch.join("fake.key");
    farm.key("1h", &key)?;
    let key = fs::read_to_string(&key)?;
    let (code, body) = farm.curl(
        "POST",
        "/hosts/enroll",
        None,
        Some(&format!(r#"{{"key":"{}","name":"fake"}}"#, key.trim())),
    );
    ensure!(code == 201, "enroll: {code} {body}");
    let host_secret = serde_json::from_str::<Value>(&body)?["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same key again: refused, and no host is added.
    let (code, body) = farm.curl(
        "POST",
        "/hosts/enroll",
        None,
        Some(&format!(r#"{{"key":"{}","name":"fake-2"}}"#, key.trim())),
    );
    ensure!(
        code == 401 && body.contains("used already"),
        "reuse: {code} {body}"
    );
    farm.submit("quick-a");
    farm.submit("quick-b");
    let caps = r#"{"capabilities":{"arches":[{"arch":"amd64","native":true}],"backends":["dir"],"free_slots":1}}"#;
    let mut leases = Vec::new();
    for _ in 0..2 {
        let (code, body) = farm.curl("POST", "/hosts/lease", Some(&host_secret), Some(caps));
        ensure!(code == 200, "lease: {code} {body}");
        let lease: Value = serde_json::from_str(&body)?;
        leases.push((
            lease["job"]["id"].as_str().unwrap().to_owned(),
            lease["secret"].as_str().unwrap().to_owned(),
        ));
    }
    let ((job_a, secret_a), (job_b, _)) = (&leases[0], &leases[1]);
    // A job's credential fetches its own inputs (the newest repository snapshot), not another
    // job's nor an input its job does not carry.
    let (code, _) = farm.curl(
        "GET",
        &format!("/jobs/{job_a}/inputs/{}", inputs.repo),
        Some(secret_a),
        None,
    );
    ensure!(code == 200, "a job's own input: {code}");
    for (job, sha256) in [(job_b, &inputs.repo), (job_a, &inputs.stage)] {
        let (code, body) = farm.curl(
            "GET",
            &format!("/jobs/{job}/inputs/{sha256}"),
            Some(secret_a),
            None,
        );
        ensure!(code == 403, "{job}'s input {sha256}: {code} {body}");
    }
    // Job A's credential on job B: refused, and B has no events.
    let event = r#"{"event":"note","step":"root","plugin":"x","text":"forged"}"#;
    let (code, body) = farm.curl(
        "POST",
        &format!("/jobs/{job_b}/events"),
        Some(secret_a),
        Some(event),
    );
    ensure!(
        code == 403 && body.contains("not"),
        "cross-job events: {code} {body}"
    );
    let (code, body) = farm.curl(
        "POST",
        &format!("/jobs/{job_b}/result"),
        Some(secret_a),
        Some(r#"{"record":{},"logs":[]}"#),
    );
    ensure!(code == 403, "cross-job result: {code} {body}");
    // Its own job, with a record that is not one: refused, the job still running.
    let (code, body) = farm.curl(
        "POST",
        &format!("/jobs/{job_a}/result"),
        Some(secret_a),
        Some(r#"{"record":{"system":"quick-a"},"logs":[]}"#),
    );
    ensure!(
        code == 400 && body.contains("does not parse"),
        "a bad record: {code} {body}"
    );
    // A host credential is not a person's token.
    let (code, _) = farm.curl("GET", "/builds", Some(&host_secret), None);
    ensure!(code == 401, "a host read the builds: {code}");
    // Revoked: the host and its jobs' credentials stop working; its jobs go back to the queue.
    farm.admin(&["farm", "host", "revoke", "fake"]);
    let (code, body) = farm.curl("POST", "/hosts/lease", Some(&host_secret), Some(caps));
    ensure!(code == 401, "a revoked host leased: {code} {body}");
    let (code, _) = farm.curl(
        "POST",
        &format!("/jobs/{job_a}/events"),
        Some(secret_a),
        Some(event),
    );
    ensure!(
        code == 401,
        "a revoked host's job credential worked: {code}"
    );
    for job in farm.jobs() {
        ensure!(
            job["state"] == "queued",
            "a revoked host's job stayed with it: {job}"
        );
    }
    // An expired key.
    let short = scratch.join("short.key");
    farm.key("1s", &short)?;
    std::thread::sleep(Duration::from_millis(1500));
    let (code, body) = farm.curl(
        "POST",
        "/hosts/enroll",
        None,
        Some(&format!(
            r#"{{"key":"{}","name":"late"}}"#,
            fs::read_to_string(&short)?.trim()
        )),
    );
    ensure!(
        code == 401 && body.contains("expired"),
        "expired key: {code} {body}"
    );
    let hosts = farm.admin(&["--json", "farm", "host", "list"]).json();
    let names: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    ensure!(
        names == ["fake"],
        "refused enrollments added hosts: {names:?}"
    );
    let audit = farm.admin(&["farm", "audit"]).stdout;
    for action in [
        "input add\trepo/example",
        "input add\tstage/arm64-busybox",
        "token create\twatcher",
        "host enroll\tfake",
        "host revoke\tfake",
        "submit\tquick-a",
    ] {
        ensure!(
            audit.contains(action),
            "the audit log lacks {action}:\n{audit}"
        );
    }
    Ok(())
}

/// The SHA-256s of the inputs the farm hands out.
struct Inputs {
    repo: String,
    stage: String,
}

/// The admin hands the example repository's snapshot and the arm64 busybox stage to the
/// farm's hosts; a viewer may list them, not add one; a content that is not what its kind
/// says is refused.
fn add_inputs(farm: &Farm, scratch: &Path, viewer: &Path) -> Result<Inputs> {
    let (repo, _) = example_repo();
    let packed = farm.server_dir.ok([
        "repo",
        "pack",
        "--dir",
        repo.to_str().unwrap(),
        "--name",
        "example",
    ]);
    let image = PathBuf::from(packed.stdout.trim());
    let tree = scratch.join("arm64-stage");
    build_busybox_tree_of(&tree, &arm64_busybox()?)?;
    let tarball = scratch.join("arm64-busybox.tar.gz");
    run_tool(
        Command::new("tar")
            .args(["--numeric-owner", "-czf"])
            .arg(&tarball)
            .arg("-C")
            .arg(&tree)
            .arg("."),
    )?;
    let add = |token: &Path, kind: &str, name: &str, file: &Path| {
        farm.run_as(
            Some(token),
            &["farm", "input", "add", kind, name, file.to_str().unwrap()],
        )
    };
    let run = add(viewer, "repo", "example", &image);
    run.expect_one_error();
    ensure!(
        run.stderr.contains("needs the admin role"),
        "{}",
        run.describe()
    );
    let run = add(&farm.admin, "repo", "example", &tarball);
    run.expect_one_error();
    ensure!(run.stderr.contains("SquashFS"), "{}", run.describe());
    ensure!(
        farm.admin(&["farm", "input", "list"]).stdout.is_empty(),
        "a refused input was added"
    );
    let added = |kind: &str, name: &str, file: &Path| {
        add(&farm.admin, kind, name, file)
            .expect_code(0)
            .stdout
            .trim()
            .to_owned()
    };
    let repo = added("repo", "example", &image);
    ensure!(
        repo == sha256_hex(&fs::read(&image)?),
        "the repo's SHA-256: {repo}"
    );
    let stage = added("stage", "arm64-busybox", &tarball);
    // The server checks too: a tarball named as a repository snapshot is refused.
    let admin = fs::read_to_string(&farm.admin)?;
    let (code, body) = farm.curl(
        "PUT",
        "/inputs/repo/not-squashfs",
        Some(admin.trim()),
        Some(&format!(r#"{{"sha256":"{stage}"}}"#)),
    );
    ensure!(code == 400 && body.contains("SquashFS"), "{code} {body}");
    let listed = farm.run_as(Some(viewer), &["--json", "farm", "input", "list"]);
    let listed: Vec<(String, String)> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                format!(
                    "{}/{}",
                    i["kind"].as_str().unwrap(),
                    i["name"].as_str().unwrap()
                ),
                i["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ensure!(
        listed
            == [
                ("stage/arm64-busybox".to_owned(), stage.clone()),
                ("repo/example".to_owned(), repo.clone())
            ],
        "{listed:?}"
    );
    Ok(Inputs { repo, stage })
}

#[test]
fn a_farm_spreads_builds_records_them_once_and_survives_faults() -> Result<()> {
    let mut farm = Farm::start(3)?;
    let scratch = farm.server_dir.scratch();
    refusals(&farm, &scratch)?;

    // The API's own document, and Swagger UI, from the binary.
    let (code, body) = farm.curl("GET", "/openapi.json", None, None);
    ensure!(
        code == 200 && body.contains("\"/jobs/{id}/result\""),
        "{code}"
    );
    let (code, body) = farm.curl("GET", "/docs/", None, None);
    ensure!(code == 200 && body.contains("swagger"), "swagger: {code}");

    // host-0 builds arm64 (through qemu-user), the others amd64.
    ensure_arm64_handler()?;
    let mut hosts = [
        Host::new(&farm, 0, "arm64")?,
        Host::new(&farm, 1, "amd64")?,
        Host::new(&farm, 2, "amd64")?,
    ];
    let listed = farm.admin(&["--json", "farm", "host", "list"]).json();
    let arm64: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            let arches = h["capabilities"]["arches"].as_array().unwrap();
            arches.iter().any(|a| a["arch"] == "arm64")
        })
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    ensure!(
        arm64 == ["host-0"],
        "hosts that say they build arm64: {arm64:?}"
    );

    // Builds spread over the hosts, each recorded once.
    for system in &QUICK[2..] {
        farm.submit(system);
    }
    for system in QUICK {
        let job = farm.wait_ended(system);
        ensure!(job["state"] == "succeeded", "{system}: {job}");
    }
    // An arm64 system goes to the host that can build arm64, through qemu-user there.
    farm.submit("tiny-arm64");
    let job = farm.wait_ended("tiny-arm64");
    ensure!(
        job["state"] == "succeeded" && job["host"] == "host-0" && job["arch"] == "arm64",
        "{job}"
    );
    // Its stage came from the farm, by content, with the repository snapshot.
    let log = hosts[0].log();
    ensure!(
        log.contains("fetching stage 'arm64-busybox'") && log.contains("fetching repo 'example'"),
        "host-0 did not take its inputs from the farm:\n{}",
        tail(&log)
    );
    let stages = hosts[0].workdir.ok(["--json", "stage", "list"]).json();
    ensure!(
        stages
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"]["name"] == "arm64-busybox" && s["properties"]["arch"] == "arm64"),
        "{stages}"
    );

    // The same build again is the same job.
    let again = farm.submit("quick-c");
    ensure!(
        again["state"] == "succeeded",
        "a resubmission made a new job: {again}"
    );
    let builds = farm.builds();
    let mut per_system: BTreeMap<String, usize> = BTreeMap::new();
    for build in &builds {
        *per_system
            .entry(build["system"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    ensure!(
        per_system.values().all(|&n| n == 1),
        "recorded twice: {per_system:?}"
    );
    let used: BTreeSet<&str> = builds.iter().map(|b| b["host"].as_str().unwrap()).collect();
    ensure!(used.len() >= 2, "all builds went to {used:?}");

    // The results, from the server, equal the files the host made.
    let build = builds.iter().find(|b| b["system"] == "quick-a").unwrap();
    let number = build["number"].as_i64().unwrap().to_string();
    let detail = farm
        .admin(&["--json", "builds", "show", "quick-a", &number])
        .json();
    ensure!(detail["outcome"] == "succeeded", "{detail}");
    let host = hosts
        .iter()
        .find(|h| build["host"] == h.name.as_str())
        .unwrap();
    let token = fs::read_to_string(&farm.admin)?;
    let artifacts = detail["artifacts"].as_array().unwrap();
    ensure!(!artifacts.is_empty(), "no artifacts: {detail}");
    for artifact in artifacts {
        let name = artifact["name"].as_str().unwrap();
        let download = Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&farm.ca)
            .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
            .arg(format!(
                "{}/api/v1/builds/quick-a/{number}/artifacts/{name}",
                farm.url
            ))
            .output()?;
        ensure!(download.status.success(), "cannot download {name}");
        let downloaded = download.stdout;
        let on_host = fs::read(host.workdir.path().join("out/quick-a").join(name))?;
        ensure!(
            downloaded == on_host,
            "{name} from the server differs from the host's"
        );
        ensure!(
            sha256_hex(&downloaded) == artifact["sha256"].as_str().unwrap(),
            "{name}'s hash"
        );
    }
    // Keep and publish: an operator's, not a viewer's; published in the server's directory.
    let viewer = scratch.join("viewer.token");
    let run = farm.run_as(Some(&viewer), &["builds", "keep", "quick-a", &number]);
    run.expect_one_error();
    ensure!(
        run.stderr.contains("needs the operator role"),
        "{}",
        run.describe()
    );
    farm.admin(&["builds", "keep", "quick-a", &number]);
    let kept = farm
        .admin(&["--json", "builds", "show", "quick-a", &number])
        .json();
    ensure!(kept["kept"] == true, "{kept}");
    farm.admin(&["publish", "quick-a", &number, "--tag", "stable"]);
    let link = farm
        .server_dir
        .path()
        .join("farm-server/published/quick-a@stable");
    let first = artifacts[0]["name"].as_str().unwrap();
    ensure!(
        fs::read(link.join(first))?
            == fs::read(host.workdir.path().join("out/quick-a").join(first))?,
        "published/quick-a@stable does not hold the build's {first}"
    );
    let log = farm.admin(&["builds", "log", "quick-a", &number]).stdout;
    ensure!(log.contains("a line for the log"), "the log: {log}");

    // SIGKILL of a host mid-build: the job goes to another host and completes once.
    farm.submit("slow-kill");
    let victim = farm.wait_running("slow-kill");
    let index = hosts.iter().position(|h| h.name == victim).unwrap();
    hosts[index]
        .worker
        .as_mut()
        .unwrap()
        .signal(rustix::process::Signal::KILL);
    hosts[index].worker.as_mut().unwrap().wait();
    let job = farm.wait_ended("slow-kill");
    ensure!(
        job["state"] == "succeeded" && job["host"] != victim.as_str(),
        "{job}"
    );
    ensure!(job["attempt"].as_i64() >= Some(1), "not redelivered: {job}");
    hosts[index].start(&farm, None)?;

    // A worker stopped (SIGTERM) mid-build stops its build and gives the job back at once.
    farm.submit("slow-stop");
    let stopped = farm.wait_running("slow-stop");
    let index = hosts.iter().position(|h| h.name == stopped).unwrap();
    let worker = hosts[index].worker.as_mut().unwrap();
    worker.signal(rustix::process::Signal::TERM);
    worker.wait();
    ensure!(
        hosts[index]
            .log()
            .contains("the job goes back to the queue"),
        "{}",
        hosts[index].log()
    );
    let job = farm.wait_ended("slow-stop");
    ensure!(
        job["state"] == "succeeded" && job["host"] != stopped.as_str(),
        "{job}"
    );
    hosts[index].start(&farm, None)?;

    // A host cut off past its lease: the job goes on elsewhere; its late report is refused.
    farm.submit("slow-cut");
    let cut = farm.wait_running("slow-cut");
    let index = hosts.iter().position(|h| h.name == cut).unwrap();
    farm.network.set_link(index, false)?;
    wait_until(
        "slow-cut moves to another host",
        Duration::from_secs(60),
        || {
            farm.job_of("slow-cut")
                .is_some_and(|j| j["host"] != cut.as_str())
        },
    );
    std::thread::sleep(Duration::from_secs(9));
    farm.network.set_link(index, true)?;
    let job_id = farm.job_of("slow-cut").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = format!("refused POST /jobs/{job_id}/");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !hosts[index].log().contains(&refused) {
        ensure!(
            std::time::Instant::now() < deadline,
            "the cut host's late report was not refused:\n{}",
            hosts[index].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let job = farm.wait_ended("slow-cut");
    ensure!(
        job["state"] == "succeeded" && job["host"] != cut.as_str(),
        "{job}"
    );

    // The server restarted mid-build: nothing is lost.
    farm.submit("slow-restart");
    farm.wait_running("slow-restart");
    let mut server = farm.server.take().unwrap();
    server.signal(rustix::process::Signal::TERM);
    server.wait();
    std::thread::sleep(Duration::from_secs(2));
    farm.start_server()?;
    let job = farm.wait_ended("slow-restart");
    ensure!(job["state"] == "succeeded", "{job}");

    // A package built on one host is installed on another from the binhost, not built again.
    farm.submit("hello-first");
    let first = farm.wait_ended("hello-first");
    ensure!(first["state"] == "succeeded", "{first}");
    let builder = first["host"].as_str().unwrap().to_owned();
    let b = hosts.iter().position(|h| h.name == builder).unwrap();
    ensure!(
        hosts[b]
            .log()
            .contains("binary packages to the amd64 binhost"),
        "{}",
        hosts[b].log()
    );
    // The builder stops, so that the other host takes the second.
    let worker = hosts[b].worker.as_mut().unwrap();
    worker.signal(rustix::process::Signal::TERM);
    worker.wait();
    farm.submit("hello-second");
    let second = farm.wait_ended("hello-second");
    ensure!(
        second["state"] == "succeeded" && second["host"] != builder.as_str(),
        "{second}"
    );
    let i = hosts
        .iter()
        .position(|h| second["host"] == h.name.as_str())
        .unwrap();
    let number = second["build_number"].as_i64().unwrap().to_string();
    let log = farm
        .admin(&["builds", "log", "hello-second", &number])
        .stdout;
    ensure!(
        log.contains(">>> Emerging binary") && log.contains("app-misc/hello-1.0"),
        "not installed from the binhost: {log}"
    );
    ensure!(
        !log.contains(">>> Emerging (1 of 1) app-misc/hello"),
        "built again: {log}"
    );
    // Its root's Portage fetched it (`--getbinpkg`) through its worker's loopback binhost:
    // that one package, not the whole binhost.
    ensure!(
        hosts[i]
            .log()
            .contains("1 binary packages from the amd64 binhost"),
        "{}",
        tail(&hosts[i].log())
    );
    let gpkg = "app-misc/hello/hello-1.0-1.gpkg.tar";
    let cache = |host: &Host| -> Result<PathBuf> {
        let status = host.workdir.ok(["workdir", "status", "--json"]).json();
        Ok(PathBuf::from(status["caches"]["binpkgs"].as_str().unwrap()).join(gpkg))
    };
    ensure!(
        fs::read(cache(&hosts[b])?)? == fs::read(cache(&hosts[i])?)?,
        "the package on the second host is not the first host's"
    );
    // The package is in the amd64 binhost, and the arm64 one has none of it.
    let admin = fs::read_to_string(&farm.admin)?;
    let (code, amd64) = farm.curl("GET", "/binhost/amd64", Some(admin.trim()), None);
    ensure!(code == 200 && amd64.contains(gpkg), "{code} {amd64}");
    let (code, arm64) = farm.curl("GET", "/binhost/arm64", Some(admin.trim()), None);
    ensure!(code == 200 && arm64.trim() == "[]", "{code} {arm64}");
    portage_client_installs_from_the_binhost(&farm, &hosts[b], &cache(&hosts[b])?)?;

    // The whole path once, on the amd64 host still working: a kernel built, its EFI image
    // downloaded from the server and booted.
    a_kernel_built_on_the_farm_boots(&farm, &hosts[i])?;

    // Everything once; nothing left in the queue.
    let builds = farm.builds();
    let systems: Vec<&str> = builds
        .iter()
        .map(|b| b["system"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = systems.iter().copied().collect();
    ensure!(
        systems.len() == unique.len() && unique.len() == 14,
        "{systems:?}"
    );
    ensure!(
        builds.iter().all(|b| b["outcome"] == "succeeded"),
        "{builds:?}"
    );
    for job in farm.jobs() {
        ensure!(job["state"] == "succeeded", "left over: {job}");
    }
    Ok(())
}

/// What is refused before anything is served or sent: each a one-line error, nothing made.
/// Any Portage uses the farm's binhost as a Gentoo machine would: the farm's CA in its trust
/// store, `binrepos.conf` naming the binhost with a viewer's token, `emerge --getbinpkgonly`.
/// The client is a root of `host`'s Portage stage (its worker is stopped) with a PKGDIR of its
/// own (the host's cache has the package: Portage would take it from there); `built` is the
/// package as the host that built it has it.
fn portage_client_installs_from_the_binhost(farm: &Farm, host: &Host, built: &Path) -> Result<()> {
    let gpkg = "app-misc/hello/hello-1.0-1.gpkg.tar";
    let made = farm.admin(&[
        "farm",
        "token",
        "create",
        "portage-client",
        "--role",
        "viewer",
    ]);
    let token = made.stdout.trim();
    // Portage gets the credential by HTTP Basic; a wrong one is refused with a Basic challenge.
    let url = format!("{}/api/v1/binhost/amd64", farm.url);
    let refused = run_tool(
        Command::new("curl")
            .args(["-s", "-i", "-o", "-", "--cacert"])
            .arg(&farm.ca)
            .args(["-u", "portage:agt_wrong"])
            .arg(format!("{url}/Packages")),
    )?;
    let status_line = refused.lines().next().unwrap_or_default();
    ensure!(
        status_line.trim_end().ends_with(" 401")
            && refused.to_lowercase().contains("www-authenticate: basic"),
        "{refused}"
    );
    let config = farm.site.join("autogentoo.toml");
    let config = config.to_str().unwrap();
    let workdir = &host.workdir;
    workdir.ok(["root", "create", "portage-client", "--stage", "portage"]);
    let root = PathBuf::from(workdir.ok(["root", "path", "portage-client"]).stdout.trim());
    let trusted = root.join("usr/local/share/ca-certificates");
    fs::create_dir_all(&trusted)?;
    fs::copy(&farm.ca, trusted.join("autogentoo-farm.crt"))?;
    let sync_uri = url.replacen("https://", &format!("https://portage:{token}@"), 1);
    fs::write(
        root.join("etc/portage/binrepos.conf"),
        // The farm does not sign its packages: TLS, the token and the index's digests vouch
        // for them, and Portage is told not to look for signatures.
        format!("[farm]\nsync-uri = {sync_uri}\nverify-signature = false\n"),
    )?;
    let in_root = |command: &[&str]| {
        let mut args = vec!["--config", config, "root", "run", "portage-client", "--"];
        args.extend_from_slice(command);
        workdir.ok(args)
    };
    in_root(&["update-ca-certificates"]);
    let emerge = in_root(&[
        "env",
        "PKGDIR=/var/tmp/client-binpkgs",
        "emerge",
        "--getbinpkgonly",
        "--oneshot",
        "app-misc/hello",
    ]);
    let said = format!("{}{}", emerge.stdout, emerge.stderr);
    ensure!(
        said.contains(">>> Emerging binary (1 of 1) app-misc/hello-1.0"),
        "not installed from the binhost: {said}"
    );
    ensure!(!said.contains(token), "Portage showed the token: {said}");
    ensure!(root.join("usr/bin/hello").is_file(), "hello is installed");
    // Portage keeps what it fetched from a binhost under the binhost's name.
    ensure!(
        fs::read(root.join("var/cache/binhost/farm").join(gpkg))? == fs::read(built)?,
        "the package the client fetched is the one its host built"
    );
    workdir.ok(["root", "remove", "portage-client"]);
    Ok(())
}

/// `host` (the only amd64 host taking jobs) builds [`WITH_KERNEL`] with the kernel sources it
/// imports now; the EFI image the server hands out is the host's, and boots.
fn a_kernel_built_on_the_farm_boots(farm: &Farm, host: &Host) -> Result<()> {
    farm.admin(&[
        "farm",
        "input",
        "add",
        "kernel",
        "linux",
        KERNEL_SOURCE_TARBALL,
    ]);
    farm.submit(WITH_KERNEL);
    let job = farm.wait_ended_within(WITH_KERNEL, Duration::from_secs(1800));
    ensure!(
        job["state"] == "succeeded" && job["host"] == host.name.as_str(),
        "{job}\n{}",
        tail(&host.log())
    );
    ensure!(
        host.log().contains("fetching kernel 'linux'"),
        "the host did not take the kernel sources from the farm:\n{}",
        tail(&host.log())
    );
    let number = job["build_number"].as_i64().unwrap().to_string();
    let detail = farm
        .admin(&["--json", "builds", "show", WITH_KERNEL, &number])
        .json();
    let efi = format!("{WITH_KERNEL}.efi");
    ensure!(
        detail["artifacts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["name"] == efi.as_str())),
        "no EFI image among the artifacts: {detail}"
    );
    let image = farm.server_dir.scratch().join(&efi);
    let token = fs::read_to_string(&farm.admin)?;
    run_tool(
        Command::new("curl")
            .args(["-sf", "-o"])
            .arg(&image)
            .arg("--cacert")
            .arg(&farm.ca)
            .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
            .arg(format!(
                "{}/api/v1/builds/{WITH_KERNEL}/{number}/artifacts/{efi}",
                farm.url
            )),
    )?;
    ensure!(
        fs::read(&image)?
            == fs::read(host.workdir.path().join("out").join(WITH_KERNEL).join(&efi))?,
        "the EFI image from the server differs from the host's"
    );
    let boot = farm.server_dir.run([
        "kernel".as_ref(),
        "boot".as_ref(),
        image.as_os_str(),
        "--expect".as_ref(),
        std::ffi::OsStr::new(BOOTED),
        "--timeout".as_ref(),
        std::ffi::OsStr::new("600"),
    ]);
    ensure!(
        boot.status.success(),
        "the image does not boot: {}",
        boot.describe()
    );
    Ok(())
}

#[test]
fn serve_worker_and_clients_refuse_unsafe_or_impossible_setups() -> Result<()> {
    let workdir = Workdir::new();
    let site = workdir.scratch().join("autogentoo.toml");
    fs::write(
        &site,
        "[database]\nurl = \"postgres://autogentoo@127.0.0.1:1/farm\"\n",
    )?;
    let site = site.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--config", site, "serve", "--plain-http", "--listen", "0.0.0.0:8443"],
            "plain HTTP is only for a loopback address, not 0.0.0.0:8443",
        ),
        (
            &["--config", site, "serve"],
            "`serve` needs --tls-cert and --tls-key, or --plain-http on a loopback address",
        ),
        (
            &["serve", "--plain-http"],
            "`serve` hands out a site config: give --config FILE",
        ),
        (
            &["builds", "list", "--server", "http://192.0.2.1:8443"],
            "is not a farm server URL: use https://HOST[:PORT] (http:// only for a loopback address)",
        ),
        (
            &["worker", "--server", "https://127.0.0.1:1"],
            "this host is not enrolled",
        ),
        (
            &["submit", "web"],
            "`submit` talks to a farm server: give --server URL",
        ),
    ];
    for (args, message) in cases {
        let run = workdir.run(args);
        assert_eq!(run.code(), Some(1), "{}", run.describe());
        run.expect_one_error();
        assert!(
            run.stderr.contains(message),
            "wanted {message:?}: {}",
            run.describe()
        );
    }
    Ok(())
}

/// One machine: `serve` with no database configured keeps everything in the workdir's SQLite
/// database and builds the jobs itself, in that workdir, with a worker of its own. Stopped in
/// the middle of a build, it gives the job back, and builds it when it starts again; each build
/// is recorded once, and the local `builds list` shows what the server's API does. On a new
/// database its worker enrolls again.
#[test]
fn one_machine_serves_and_builds_alone_on_sqlite() -> Result<()> {
    let workdir = busybox_workdir()?;
    let scratch = workdir.scratch();
    let config = scratch.join("site/autogentoo.toml");
    fs::create_dir_all(config.parent().unwrap())?;
    fs::write(
        &config,
        "[pack]\nrdinit = \"/bin/sh\"\n\n\
         [systems.alone-quick]\nstage = \"busybox\"\nkernel_build = \"none\"\n\
         commands = [\"echo built alone > /etc/built\"]\n\n\
         [systems.alone-slow]\nstage = \"busybox\"\nkernel_build = \"none\"\n\
         commands = [\"echo started; sleep 8; echo slept > /etc/built\"]\n\n\
         [systems.alone-pinned]\nstage = \"busybox\"\nkernel_build = \"none\"\n\
         commands = [\"echo pinned > /etc/built\"]\n\n\
         [systems.alone-cancelled]\nstage = \"busybox\"\nkernel_build = \"none\"\n\
         commands = [\"echo started; sleep 30; echo slept > /etc/built\"]\n",
    )?;
    let config = config.to_str().unwrap().to_owned();
    let token = scratch.join("me.token");
    let made = workdir.ok([
        "--config", &config, "farm", "token", "create", "me", "--role", "operator",
    ]);
    fs::write(&token, made.stdout.trim())?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let log = scratch.join("serve.log");
    let start = || -> Result<Process> {
        let before = fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("takes jobs from")
            .count();
        let mut command = workdir.command([
            "--config",
            &config,
            "serve",
            "--plain-http",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--heartbeat",
            HEARTBEAT,
            "--dead-after",
            DEAD_AFTER,
        ]);
        command.env("AUTOGENTOO_LOG", "info");
        let server = Process::start(command, log.clone())?;
        wait_until(
            "the server's own worker takes jobs",
            Duration::from_secs(60),
            || server.log().matches("takes jobs from").count() > before,
        );
        Ok(server)
    };
    let client = |args: &[&str]| {
        let mut command = isolated_binary();
        command
            .env("AUTOGENTOO_SERVER", &url)
            .env("AUTOGENTOO_TOKEN_FILE", &token)
            .args(args);
        Run::of(command)
    };
    let submit_pinned = || {
        client(&[
            "--json",
            "submit",
            "alone-pinned",
            "--host-backend",
            "btrfs",
        ])
        .json()
    };
    let mut server = start()?;
    // Pinned to a backend this machine's worker does not have: it waits for a host that does.
    let pinned = submit_pinned();
    ensure!(
        pinned["backend"] == "btrfs" && pinned["state"] == "queued",
        "{pinned}"
    );
    let quick = client(&["--json", "submit", "alone-quick", "--wait"]);
    ensure!(
        quick.status.success(),
        "{}\n{}",
        quick.describe(),
        tail(&server.log())
    );

    // Stopped mid-build, the server gives the job back and builds it when it comes back.
    client(&["submit", "alone-slow"]).expect_code(0);
    wait_until("alone-slow runs", Duration::from_secs(120), || {
        client(&["--json", "builds", "list"])
            .stdout
            .contains("\"alone-slow\"")
    });
    std::thread::sleep(Duration::from_secs(2));
    server.signal(rustix::process::Signal::TERM);
    server.wait();
    ensure!(
        server.log().contains("goes back to the queue"),
        "{}",
        tail(&server.log())
    );
    let mut server = start()?;
    let jobs = || client(&["--json", "builds", "list"]).json();
    wait_until(
        "alone-slow is built again",
        Duration::from_secs(120),
        || {
            jobs().as_array().is_some_and(|builds| {
                builds
                    .iter()
                    .any(|b| b["system"] == "alone-slow" && b["outcome"] == "succeeded")
            })
        },
    );

    // The server's records are the workdir's: the same builds, once each, locally and remotely.
    let remote = jobs();
    let local = workdir
        .ok(["--config", &config, "--json", "builds", "list"])
        .json();
    let succeeded = |builds: &Value| -> Vec<String> {
        let mut names: Vec<String> = builds
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["outcome"] == "succeeded")
            .map(|b| b["system"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    };
    ensure!(
        succeeded(&remote) == ["alone-quick", "alone-slow"]
            && succeeded(&local) == succeeded(&remote),
        "remote {remote}\nlocal {local}"
    );
    ensure!(
        workdir.path().join("out/alone-quick").is_dir(),
        "the build's results are in the workdir"
    );
    let pinned = submit_pinned();
    ensure!(
        pinned["state"] == "queued",
        "a job for btrfs went to a dir host: {pinned}"
    );
    // Cancelled: the waiting job leaves the queue; the running one is stopped on its host, and
    // its record ends as interrupted. A job that has ended cannot be cancelled.
    let cancel = |id: &str| client(&["--json", "farm", "job", "cancel", id]);
    let id = pinned["id"].as_str().unwrap().to_owned();
    ensure!(cancel(&id).json()["state"] == "cancelled", "{pinned}");
    let run = client(&["farm", "job", "cancel", &id]);
    run.expect_one_error();
    ensure!(run.stderr.contains("has ended"), "{}", run.describe());
    let running = client(&["--json", "submit", "alone-cancelled"]).json();
    let id = running["id"].as_str().unwrap().to_owned();
    wait_until("alone-cancelled runs", Duration::from_secs(120), || {
        client(&["--json", "farm", "job", "list"])
            .json()
            .as_array()
            .is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| j["id"] == id.as_str() && j["state"] == "running")
            })
    });
    std::thread::sleep(Duration::from_secs(2));
    ensure!(cancel(&id).json()["state"] == "cancelled", "{running}");
    wait_until("the cancelled build stops", Duration::from_secs(60), || {
        server.log().contains("the lease was lost")
    });
    // Stopped in the middle of its quiet command, not when it next reported.
    let root = workdir.ok(["root", "path", "alone-cancelled"]).stdout;
    ensure!(
        !Path::new(root.trim()).join("etc/built").exists(),
        "the cancelled command ran to its end"
    );
    let builds = jobs();
    ensure!(
        builds
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["system"] == "alone-cancelled"
                && b["outcome"] == "interrupted"
                && b["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("cancelled by me"))),
        "{builds}"
    );
    server.signal(rustix::process::Signal::TERM);
    server.wait();

    // A new database does not know the worker's credential: the worker enrolls again.
    for file in ["autogentoo.db", "autogentoo.db-wal", "autogentoo.db-shm"] {
        let _ = fs::remove_file(workdir.path().join(file));
    }
    let made = workdir.ok([
        "--config", &config, "farm", "token", "create", "me", "--role", "operator",
    ]);
    fs::write(&token, made.stdout.trim())?;
    let mut server = start()?;
    ensure!(
        server.log().matches("enrolled as").count() == 2,
        "{}",
        tail(&server.log())
    );
    let quick = client(&["--json", "submit", "alone-quick", "--wait"]);
    ensure!(quick.status.success(), "{}", quick.describe());

    // The farm hands out a stage under the name of one this machine imported by hand: the job
    // fails, saying what to remove, and the machine's own stage is left as it was.
    let stages = || workdir.ok(["--json", "stage", "list"]).stdout;
    let before = stages();
    let tarball = scratch.join("other-busybox.tar");
    let tree = workdir.ok(["stage", "path", "busybox"]).stdout;
    run_tool(
        Command::new("tar")
            .args(["--numeric-owner", "-cf"])
            .arg(&tarball)
            .args(["-C", tree.trim(), "."]),
    )?;
    let admin = scratch.join("admin.token");
    let made = workdir.ok([
        "--config", &config, "farm", "token", "create", "boss", "--role", "admin",
    ]);
    fs::write(&admin, made.stdout.trim())?;
    let mut add = isolated_binary();
    add.env("AUTOGENTOO_SERVER", &url)
        .env("AUTOGENTOO_TOKEN_FILE", &admin)
        .args(["farm", "input", "add", "stage", "busybox"])
        .arg(&tarball);
    Run::of(add).expect_code(0);
    let theirs = client(&["--json", "submit", "alone-quick", "--wait"]);
    ensure!(
        !theirs.status.success()
            && theirs
                .stderr
                .contains("stage 'busybox' is not the one the farm hands out")
            && theirs.stderr.contains("autogentoo stage remove busybox"),
        "{}",
        theirs.describe()
    );
    ensure!(stages() == before, "the machine's own stage was touched");
    // Its own stage removed, the failed build submitted again is built again, from the farm's.
    workdir.ok(["stage", "remove", "busybox", "--recursive"]);
    let again = client(&["--json", "submit", "alone-quick", "--wait"]);
    ensure!(
        again.status.success() && again.json()["id"] != theirs.json()["id"],
        "{}\n{}",
        again.describe(),
        tail(&server.log())
    );
    ensure!(
        server.log().contains("fetching stage 'busybox'"),
        "{}",
        tail(&server.log())
    );
    server.signal(rustix::process::Signal::TERM);
    server.wait();
    Ok(())
}
