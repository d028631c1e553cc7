//! A private PostgreSQL cluster for one test: `initdb` from the machine's PostgreSQL in a
//! temporary directory, the server on a free port of 127.0.0.1 with its socket in that
//! directory and password authentication, run as the `postgres` user (the server refuses
//! root). It is stopped by its PID when dropped, pass or fail.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tempfile::TempDir;

use crate::run_tool;

/// The role the tests connect as.
pub const USER: &str = "autogentoo";

/// A running private cluster.
pub struct PrivatePostgres {
    server: Child,
    port: u16,
    password_file: PathBuf,
    dir: TempDir,
}

/// The newest PostgreSQL's programs on the machine (`apt-get install postgresql`).
fn bin_dir() -> Result<PathBuf> {
    let top = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(top)
        .with_context(|| {
            format!(
                "no PostgreSQL in {}: apt-get install postgresql",
                top.display()
            )
        })?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no initdb under {}: apt-get install postgresql",
            top.display()
        ),
    }
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&"postgres") && fields.len() > 3 {
            return Ok((fields[2].parse()?, fields[3].parse()?));
        }
    }
    bail!("no postgres user: apt-get install postgresql")
}

/// A command of PostgreSQL's, run as the `postgres` user.
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C");
    command
}

impl PrivatePostgres {
    /// Makes and starts a cluster, and waits until it accepts connections.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let (uid, gid) = postgres_ids()?;
        let dir = tempfile::Builder::new()
            .prefix("autogentoo-pg.")
            .tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
        chown(dir.path(), Some(uid), Some(gid))?;
        // A password made for this cluster: the tests read it from a file, as a site would.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let password = format!("pw-{}-{nanos}", std::process::id());
        let password_file = dir.path().join("password");
        fs::write(&password_file, format!("{password}\n"))?;
        chown(&password_file, Some(uid), Some(gid))?;
        let data = dir.path().join("data");
        run_tool(
            as_postgres(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    USER,
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--auth=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", password_file.display())),
        )
        .context("initdb failed")?;
        let port = free_port()?;
        let log = fs::File::create(dir.path().join("server.log"))?;
        let server = as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=50",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start postgres")?;
        let cluster = Self {
            server,
            port,
            password_file,
            dir,
        };
        cluster.wait_ready(&bin)?;
        Ok(cluster)
    }

    fn wait_ready(&self, bin: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log =
                    fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                bail!("the private PostgreSQL did not start within a minute:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The URL of its `postgres` database, without the password.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL with the password, as `AUTOGENTOO_DATABASE_URL` would hold it.
    pub fn url_with_password(&self) -> Result<String> {
        let password = fs::read_to_string(&self.password_file)?;
        Ok(format!(
            "postgres://{USER}:{}@127.0.0.1:{}/postgres",
            password.trim(),
            self.port
        ))
    }

    /// The file holding the password.
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// Runs SQL with psql; returns what it printed (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> Result<String> {
        let password = fs::read_to_string(&self.password_file)?;
        run_tool(
            Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
                .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
                .env("PGPASSWORD", password.trim()),
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Fast shutdown by the server's own PID; SIGKILL if it does not go within 30 s.
        let Some(pid) = i32::try_from(self.server.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return;
        };
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A TCP port of 127.0.0.1 nothing listens on now.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
