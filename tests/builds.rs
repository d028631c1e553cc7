//! The build database, through the binary, on both of its databases: SQLite in the workdir
//! (nothing set up) and PostgreSQL (a private cluster each test starts, its password read from
//! a file named by the site config). What a user checks: `builds list|show|log`, the results
//! kept in `out/SYSTEM/N/`, a failed build, a killed one, two at once, a newer schema.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use autogentoo_tests::postgres::PrivatePostgres;
use autogentoo_tests::{
    busybox_workdir, processes_rooted_in, run_tool, wait_until, Run, Spawned, Workdir,
    QUICK_SYSTEMS,
};

/// The quick systems, and one whose commands sleep until the test kills its build.
fn systems() -> String {
    format!(
        "{QUICK_SYSTEMS}\n[systems.slow]\nstage = \"busybox\"\nkernel_build = \"none\"\n\
         commands = [\"echo sleeping; sleep 600\"]\n"
    )
}

/// Which database a test runs on.
enum Database {
    Sqlite,
    Postgres(PrivatePostgres),
}

/// A workdir with the busybox stage, and a site config recording into `database`.
struct Site {
    workdir: Workdir,
    config: PathBuf,
    database: Database,
}

impl Site {
    fn new(database: Database) -> Result<Self> {
        let workdir = busybox_workdir()?;
        let config = workdir.scratch().join("autogentoo.toml");
        let site = Self {
            workdir,
            config,
            database,
        };
        site.write_config(&systems())?;
        Ok(site)
    }

    /// Writes the site config: `systems`, and for PostgreSQL its `[database]` table.
    fn write_config(&self, systems: &str) -> Result<()> {
        let mut text = systems.to_owned();
        if let Database::Postgres(cluster) = &self.database {
            text.push_str(&format!(
                "\n[database]\nurl = \"{}\"\npassword_file = \"{}\"\n",
                cluster.url(),
                cluster.password_file().display()
            ));
        }
        fs::write(&self.config, text)?;
        Ok(())
    }

    fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut all = vec![OsStr::new("--config"), self.config.as_os_str()];
        all.extend(args.iter().map(AsRef::as_ref));
        self.workdir.command(all)
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend(args);
        self.workdir.run(all)
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert!(run.status.success(), "expected success: {}", run.describe());
        run
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend(args);
        self.ok(&all).json()
    }

    /// The recorded builds of `system`, newest first.
    fn builds(&self, system: &str) -> Vec<serde_json::Value> {
        let list = self.json(&["builds", "list", system]);
        list.as_array().expect("a list").clone()
    }

    fn out(&self, rel: &str) -> PathBuf {
        self.workdir.path().join("out").join(rel)
    }

    /// Runs SQL on the site's database, as an administrator would: psql, or Python's sqlite3.
    fn sql(&self, sql: &str) -> Result<()> {
        match &self.database {
            Database::Postgres(cluster) => cluster.psql(sql).map(drop),
            Database::Sqlite => run_tool(
                Command::new("python3")
                    .arg("-c")
                    .arg(
                        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
                         c.execute(sys.argv[2]); c.commit()",
                    )
                    .arg(self.workdir.path().join("autogentoo.db"))
                    .arg(sql),
            )
            .map(drop),
        }
    }
}

fn sha256sum(path: &Path) -> Result<String> {
    let out = run_tool(Command::new("sha256sum").arg(path))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_owned())
}

/// The artifact named `name` of a `builds show --json` document.
fn artifact<'a>(build: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    build["artifacts"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["name"] == name))
        .unwrap_or_else(|| panic!("no artifact {name} in {build:#}"))
}

/// Builds are numbered per system and recorded with their steps, inputs, logs and results;
/// each build's results stay in out/SYSTEM/N, an unchanged file shared with the build before.
fn records_each_build_and_keeps_its_results(site: &Site) -> Result<()> {
    let first = site.ok(&["build", "quick"]);
    assert!(
        first
            .stderr
            .contains("recorded as build 1 of 'quick' (`autogentoo builds show quick 1`)"),
        "{}",
        first.describe()
    );
    site.ok(&["build", "quick"]);

    let builds = site.builds("quick");
    let numbers: Vec<i64> = builds
        .iter()
        .map(|b| b["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1], "newest first: {builds:#?}");
    for build in &builds {
        assert_eq!(build["outcome"], "succeeded", "{build:#}");
        assert_eq!(build["system"], "quick");
        assert!(build["ended_at"].as_i64() >= build["started_at"].as_i64());
        assert!(
            build["started_by"]
                .as_str()
                .is_some_and(|who| who.ends_with("(autogentoo)")),
            "{build:#}"
        );
        assert_eq!(
            build["host"].as_str().unwrap(),
            run_tool(Command::new("uname").arg("-n"))?.trim()
        );
        assert_eq!(
            build["config_hash"].as_str().unwrap(),
            sha256sum(&site.config)?
        );
        assert!(
            build["stage"]
                .as_str()
                .is_some_and(|s| s.starts_with("busybox (created ")),
            "{build:#}"
        );
    }

    // The first build: every step, why, and what it made.
    let one = site.json(&["builds", "show", "quick", "1"]);
    let steps: Vec<(String, String)> = one["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("workdir", "skipped"),
        ("root", "ran"),
        ("commands", "ran"),
        ("pack", "ran"),
        ("kernel", "skipped"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(steps, expected, "{one:#}");
    assert_eq!(one["steps"][2]["why"], "2 command(s) in 'quick'");
    assert!(one["steps"][3]["duration_ms"].is_i64(), "{one:#}");
    let kept_dir = site.out("quick/1");
    assert_eq!(one["out_dir"], kept_dir.to_str().unwrap());
    let archive = artifact(&one, "initramfs.cpio.gz");
    assert_eq!(archive["kind"], "initramfs");
    assert_eq!(archive["made"], true);
    let kept = kept_dir.join("initramfs.cpio.gz");
    assert_eq!(archive["sha256"].as_str().unwrap(), sha256sum(&kept)?);
    assert_eq!(
        archive["size"].as_i64().unwrap() as u64,
        fs::metadata(&kept)?.len()
    );
    assert_eq!(artifact(&one, "commands.log")["kind"], "step_log");
    artifact(&one, "initramfs.cpio.gz.manifest.json");

    // The log of its commands, from the database.
    let log = site.ok(&["builds", "log", "quick", "1", "--step", "commands"]);
    assert_eq!(
        log.stdout,
        "$ echo built > /etc/built\n$ echo a line for the log\na line for the log\n"
    );

    // The second build made nothing: its results are the first's, the same files.
    let two = site.json(&["builds", "show", "quick", "2"]);
    assert_eq!(artifact(&two, "initramfs.cpio.gz")["made"], false);
    assert_eq!(
        artifact(&two, "initramfs.cpio.gz")["sha256"],
        archive["sha256"]
    );
    let inode = |path: &Path| fs::metadata(path).map(|m| m.ino());
    assert_eq!(
        inode(&site.out("quick/2/initramfs.cpio.gz"))?,
        inode(&kept)?,
        "an unchanged file is one inode in both builds"
    );

    // A changed command: build 3 packs anew; build 1's archive is still its own.
    site.write_config(&systems().replace("echo built >", "echo rebuilt >"))?;
    site.ok(&["build", "quick"]);
    let three = site.json(&["builds", "show", "quick", "3"]);
    let new_archive = artifact(&three, "initramfs.cpio.gz");
    assert_eq!(new_archive["made"], true);
    assert_ne!(new_archive["sha256"], archive["sha256"]);
    assert_ne!(three["config_hash"], one["config_hash"]);
    assert_ne!(three["inputs"], one["inputs"]);
    assert_eq!(sha256sum(&kept)?, archive["sha256"].as_str().unwrap());
    assert_eq!(
        sha256sum(&site.out("quick/3/initramfs.cpio.gz"))?,
        new_archive["sha256"].as_str().unwrap()
    );
    // And the log of build 1 is still build 1's, in the database and in its directory.
    assert_eq!(
        fs::read_to_string(kept_dir.join("commands.log"))?,
        "$ echo built > /etc/built\n$ echo a line for the log\na line for the log\n"
    );

    // A number never recorded, and a step without a log, are errors that say what to do.
    let missing = site.run(&["builds", "show", "quick", "9"]);
    assert_eq!(missing.code(), Some(1));
    assert!(
        missing
            .stderr
            .contains("no build 9 of system 'quick' is recorded; `autogentoo builds list quick`"),
        "{}",
        missing.describe()
    );
    let no_log = site.run(&["builds", "log", "quick", "1", "--step", "pack"]);
    assert_eq!(no_log.code(), Some(1), "{}", no_log.describe());
    Ok(())
}

/// A failed build is recorded with its error; a killed one shows as interrupted; a second
/// build of a system being built is refused with the holder's PID; a build of another system
/// at the same time is recorded as well.
fn records_failed_interrupted_and_concurrent_builds(site: &Site) -> Result<()> {
    let failed = site.run(&["build", "fails"]);
    assert_eq!(failed.code(), Some(1), "{}", failed.describe());
    let builds = site.builds("fails");
    assert_eq!(builds.len(), 1, "{builds:#?}");
    assert_eq!(builds[0]["outcome"], "failed");
    let error = builds[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`echo about to fail; exit 3` failed inside root 'fails' (exit status: 3)"),
        "{error}"
    );
    let shown = site.json(&["builds", "show", "fails", "1"]);
    assert_eq!(shown["steps"][2]["outcome"], "failed", "{shown:#}");
    assert_eq!(
        site.ok(&["builds", "log", "fails", "1"]).stdout,
        "$ echo ran first\nran first\n$ echo about to fail; exit 3\nabout to fail\n"
    );

    // A slow build, under way.
    let mut slow = Spawned::start(site.command(&["build", "slow"]));
    let pid = slow.pid().as_raw_nonzero().get();
    let mut stderr = BufReader::new(slow.take_stderr());
    let mut line = String::new();
    while !line.starts_with("run  commands") {
        line.clear();
        assert!(
            stderr.read_line(&mut line)? > 0,
            "build slow ended before its commands step"
        );
    }
    let running = site.builds("slow");
    assert_eq!(running[0]["outcome"], "running", "{running:#?}");
    // Its log, followed while it runs.
    let mut follow = Spawned::start(site.command(&["builds", "log", "slow", "1", "--follow"]));
    let mut followed = BufReader::new(follow.take_stdout());
    let mut first = String::new();
    followed.read_line(&mut first)?;
    followed.read_line(&mut first)?;
    assert_eq!(first, "$ echo sleeping; sleep 600\nsleeping\n");
    assert!(!follow.has_exited(), "--follow waits for the build to end");

    // The same system again is refused, naming the build that holds it; nothing is recorded.
    let again = site.run(&["build", "slow"]);
    assert_eq!(again.code(), Some(1), "{}", again.describe());
    assert!(
        again
            .stderr
            .contains(&format!("system 'slow' is being built by PID {pid} (")),
        "{}",
        again.describe()
    );
    assert_eq!(site.builds("slow").len(), 1);

    // Another system builds meanwhile, and is recorded.
    site.ok(&["build", "quick"]);
    assert_eq!(site.builds("quick")[0]["outcome"], "succeeded");

    // Killed: the next look at the database finds its process gone.
    slow.signal(rustix::process::Signal::KILL);
    slow.wait(Duration::from_secs(30));
    let root = site.workdir.root_path("slow");
    wait_until(
        "nothing runs in the killed build's root",
        Duration::from_secs(30),
        || processes_rooted_in(&root).is_empty(),
    );
    // The follower sees it end, and says how.
    let ended = follow.wait(Duration::from_secs(30));
    assert_eq!(ended.code(), Some(1), "{}", ended.describe());
    assert!(
        ended.stderr.contains("build 1 of 'slow' interrupted"),
        "{}",
        ended.describe()
    );
    let interrupted = site.builds("slow");
    assert_eq!(interrupted[0]["outcome"], "interrupted", "{interrupted:#?}");
    assert!(interrupted[0]["ended_at"].is_i64());
    assert!(
        interrupted[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("PID {pid} on "))),
        "{interrupted:#?}"
    );
    // The lock went with the process: the system builds again (and is killed again).
    let mut next = Spawned::start(site.command(&["build", "slow"]));
    let mut stderr = BufReader::new(next.take_stderr());
    line.clear();
    while !line.starts_with("run  commands") {
        line.clear();
        assert!(stderr.read_line(&mut line)? > 0, "build slow ended early");
    }
    assert_eq!(site.builds("slow")[0]["number"], 2);
    next.signal(rustix::process::Signal::KILL);
    next.wait(Duration::from_secs(30));
    Ok(())
}

/// Builds are compared, published (atomically, only those that succeeded), kept, and purged
/// by the retention policy, which spares the kept, the published and the newest.
fn compares_publishes_keeps_and_purges(site: &Site) -> Result<()> {
    site.ok(&["build", "quick"]);
    site.write_config(&systems().replace("echo built >", "echo rebuilt >"))?;
    for _ in 2..=5 {
        site.ok(&["build", "quick"]);
    }
    let diff = site.json(&["builds", "diff", "quick", "1", "2"]);
    assert_eq!(diff["inputs"][0]["input"], "site config", "{diff:#}");
    assert_eq!(diff["added"], serde_json::json!([]));
    let text = site.ok(&["builds", "diff", "quick", "1", "2"]).stdout;
    assert!(text.starts_with("input site config: "), "{text}");

    // Publish: the link points at the build's kept results, and moves atomically.
    let link = site.workdir.path().join("published/quick");
    let published = site.ok(&["publish", "quick", "1"]);
    assert_eq!(published.stdout.trim_end(), link.to_str().unwrap());
    assert_eq!(fs::read_link(&link)?, Path::new("../out/quick/1"));
    assert_eq!(
        sha256sum(&link.join("initramfs.cpio.gz"))?,
        sha256sum(&site.out("quick/1/initramfs.cpio.gz"))?
    );
    site.ok(&["publish", "quick", "2", "--tag", "stable"]);
    assert_eq!(
        fs::read_link(site.workdir.path().join("published/quick@stable"))?,
        Path::new("../out/quick/2")
    );
    let bad_tag = site.run(&["publish", "quick", "2", "--tag", "../x"]);
    assert_eq!(bad_tag.code(), Some(2), "{}", bad_tag.describe());
    // A failed build cannot be published, and the link stays where it was.
    site.run(&["build", "fails"]);
    let refused = site.run(&["publish", "fails", "1"]);
    assert_eq!(refused.code(), Some(1));
    assert!(
        refused.stderr.contains(
            "build 1 of system 'fails' failed; only a build that succeeded can be published"
        ),
        "{}",
        refused.describe()
    );
    assert!(!site.workdir.path().join("published/fails").exists());

    // Builds 1 to 4 started 400 days ago: past what the policy keeps. 1 and 2 are published,
    // 3 is kept, 5 is the newest: only 4 goes.
    site.ok(&["builds", "keep", "quick", "3"]);
    site.sql(
        "UPDATE builds SET started_at = started_at - 34560000000 \
         WHERE system = 'quick' AND number <= 4",
    )?;
    let pretend = site.ok(&["builds", "purge", "--pretend"]);
    assert!(
        pretend
            .stdout
            .starts_with("would remove quick 4\tsucceeded\t"),
        "{}",
        pretend.describe()
    );
    assert_eq!(pretend.stdout.lines().count(), 1, "{}", pretend.describe());
    assert!(site.out("quick/4").is_dir());
    let purged = site.ok(&["builds", "purge"]);
    assert!(
        purged.stdout.starts_with("removed quick 4\t"),
        "{}",
        purged.describe()
    );
    assert!(!site.out("quick/4").exists());
    let numbers: Vec<i64> = site
        .builds("quick")
        .iter()
        .map(|b| b["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [5, 3, 2, 1]);
    assert_eq!(site.run(&["builds", "show", "quick", "4"]).code(), Some(1));
    assert!(
        link.join("initramfs.cpio.gz").is_file(),
        "the published build stays whole"
    );
    // Released, 3 goes on the next purge.
    site.ok(&["builds", "keep", "quick", "3", "--release"]);
    assert!(site
        .ok(&["builds", "purge", "quick"])
        .stdout
        .starts_with("removed quick 3\t"));
    assert!(!site.out("quick/3").exists());
    Ok(())
}

#[test]
fn sqlite_compares_publishes_keeps_and_purges() -> Result<()> {
    compares_publishes_keeps_and_purges(&Site::new(Database::Sqlite)?)
}

#[test]
fn postgresql_compares_publishes_keeps_and_purges() -> Result<()> {
    let site = Site::new(Database::Postgres(PrivatePostgres::start()?))?;
    compares_publishes_keeps_and_purges(&site)
}

#[test]
fn sqlite_records_each_build_and_keeps_its_results() -> Result<()> {
    let site = Site::new(Database::Sqlite)?;
    records_each_build_and_keeps_its_results(&site)?;
    assert!(site.workdir.path().join("autogentoo.db").is_file());
    Ok(())
}

#[test]
fn postgresql_records_each_build_and_keeps_its_results() -> Result<()> {
    let site = Site::new(Database::Postgres(PrivatePostgres::start()?))?;
    records_each_build_and_keeps_its_results(&site)?;
    // Nothing went to the workdir's SQLite file.
    assert!(!site.workdir.path().join("autogentoo.db").exists());
    Ok(())
}

#[test]
fn sqlite_records_failed_interrupted_and_concurrent_builds() -> Result<()> {
    let site = Site::new(Database::Sqlite)?;
    records_failed_interrupted_and_concurrent_builds(&site)
}

#[test]
fn postgresql_records_failed_interrupted_and_concurrent_builds() -> Result<()> {
    let site = Site::new(Database::Postgres(PrivatePostgres::start()?))?;
    records_failed_interrupted_and_concurrent_builds(&site)
}

/// A database migrated by a newer autogentoo is refused with what to do, and left as it was.
#[test]
fn a_newer_schema_is_refused_on_both_databases() -> Result<()> {
    let insert = "INSERT INTO _sqlx_migrations \
                  (version, description, success, checksum, execution_time) \
                  VALUES (9999, 'from a newer autogentoo', TRUE, X'00', 0)";
    // The newest version this autogentoo knows: its migrations are numbered from 1.
    let known =
        fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../db/migrations"))?.count();
    let knows = format!("newer than this autogentoo knows ({known})");
    let site = Site::new(Database::Sqlite)?;
    site.ok(&["builds", "list"]);
    let db = site.workdir.path().join("autogentoo.db");
    site.sql(&insert.replace("TRUE", "1"))?;
    let refused = site.run(&["builds", "list"]);
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    assert!(
        refused.stderr.contains(&format!(
            "the build database {} has schema version 9999, {knows}; upgrade autogentoo",
            db.display()
        )),
        "{}",
        refused.describe()
    );
    // A build refused by its database stops before its first step does anything: no root.
    let refused = site.run(&["build", "quick"]);
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    assert!(refused.stderr.contains(&knows), "{}", refused.describe());
    let roots = site.ok(&["root", "list"]);
    assert!(!roots.stdout.contains("quick"), "{}", roots.describe());

    // PostgreSQL, with psql; the message names the server, never the password.
    let cluster = PrivatePostgres::start()?;
    let password = fs::read_to_string(cluster.password_file())?;
    let url = cluster.url();
    let site = Site::new(Database::Postgres(cluster))?;
    site.ok(&["builds", "list"]);
    site.sql(&insert.replace("X'00'", "'\\x00'::bytea"))?;
    let Database::Postgres(cluster) = &site.database else {
        unreachable!()
    };
    let refused = site.run(&["build", "quick"]);
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    assert!(
        refused.stderr.contains(&format!(
            "the build database {url} has schema version 9999, {knows}"
        )),
        "{}",
        refused.describe()
    );
    assert!(!refused.stderr.contains(password.trim()));
    assert_eq!(cluster.psql("SELECT count(*) FROM builds")?.trim(), "0");
    Ok(())
}

/// The URL in the environment wins over the site config; a wrong password is an error that
/// names the server and not the password.
#[test]
fn the_environment_names_the_database_and_a_wrong_password_is_not_shown() -> Result<()> {
    let cluster = PrivatePostgres::start()?;
    let url = cluster.url_with_password()?;
    let site = Site::new(Database::Sqlite)?;
    let mut command = site.command(&["--json", "build", "quick"]);
    command.env("AUTOGENTOO_DATABASE_URL", &url);
    let built = Run::of(command);
    assert!(built.status.success(), "{}", built.describe());
    assert!(!site.workdir.path().join("autogentoo.db").exists());
    assert_eq!(
        cluster
            .psql("SELECT system, number, outcome FROM builds")?
            .trim(),
        "quick|1|succeeded"
    );

    let wrong = url.replace(":pw-", ":not-the-pw-");
    let mut command = site.command(&["builds", "list"]);
    command.env("AUTOGENTOO_DATABASE_URL", &wrong);
    let refused = Run::of(command);
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    assert!(
        refused
            .stderr
            .contains(&format!("cannot open the build database {}", cluster.url())),
        "{}",
        refused.describe()
    );
    assert!(
        !refused.stderr.contains("not-the-pw"),
        "{}",
        refused.describe()
    );
    Ok(())
}

/// A reader that closes the listing early (`builds list | head -0`) ends it quietly: killed by
/// SIGPIPE, as `cat` would be, with no panic on stderr.
#[test]
fn a_listing_whose_reader_went_away_ends_quietly() -> Result<()> {
    use std::os::unix::process::ExitStatusExt;
    let site = Site::new(Database::Sqlite)?;
    site.ok(&["build", "quick"]);
    let (reader, writer) = rustix::pipe::pipe()?;
    drop(reader);
    for query in [&["builds", "list"][..], &["builds", "show", "quick", "1"]] {
        let mut command = site.command(query);
        command.stdout(std::process::Stdio::from(writer.try_clone()?));
        let run = Run::of(command);
        assert_eq!(
            run.status.signal(),
            Some(rustix::process::Signal::PIPE.as_raw()),
            "{}",
            run.describe()
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    }
    Ok(())
}
