//! `autogentoo serve`: the farm's coordinator (the `autogentoo-farm` crate's server).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use autogentoo_db::Location;
use autogentoo_farm::server::{self, LocalWorker, ServeOptions};
use clap::Args;

use crate::context::Context;

/// Serve the build farm's API
///
/// Run the farm's coordinator: a REST API under /api/v1 (its OpenAPI document at
/// /api/v1/openapi.json, Swagger UI at /api/v1/docs) over the build database and the job
/// queue in it. Build hosts (`autogentoo worker`) take jobs from it; people submit builds
/// (`autogentoo submit`) with API tokens (`autogentoo farm token create`). Jobs build with the
/// site config's directory (`--config`), snapshotted by hash at each submission. TLS with
/// --tls-cert and --tls-key; --plain-http only on a loopback address. Stops on SIGINT or
/// SIGTERM, after its own worker has given back the job it ran.
///
/// A farm's database is PostgreSQL (`[database]` or AUTOGENTOO_DATABASE_URL). Without one,
/// serve keeps everything in the workdir's SQLite database and builds the jobs itself, in this
/// workdir, with a worker of its own: one machine needs nothing else (--no-local-worker to
/// leave the building to hosts, --local-worker to build here beside a farm's hosts).
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,

    /// The server's certificate chain (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The server's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve plain HTTP (only on a loopback address, for a single machine)
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub plain_http: bool,

    /// Where the server keeps site snapshots, uploads, artifacts and results
    /// [default: WORKDIR/farm-server]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Seconds between build hosts' heartbeats
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub heartbeat: u64,

    /// Seconds without a heartbeat after which a host's jobs go to other hosts
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub dead_after: u64,

    /// Build jobs here too, with a worker of the server's own in this workdir [default: with
    /// SQLite, not with PostgreSQL]
    #[arg(long, overrides_with = "no_local_worker")]
    pub local_worker: bool,

    /// Leave the building to the build hosts
    #[arg(long, overrides_with = "local_worker")]
    pub no_local_worker: bool,
}

pub fn run(ctx: &Context, args: ServeArgs) -> Result<()> {
    let config_file = ctx
        .config_path()
        .context("`serve` hands out a site config: give --config FILE")?
        .to_owned();
    let tls = match (args.tls_cert, args.tls_key, args.plain_http) {
        (Some(cert), Some(key), false) => Some((cert, key)),
        (_, _, true) => None,
        _ => anyhow::bail!(
            "`serve` needs --tls-cert and --tls-key, or --plain-http on a loopback address"
        ),
    };
    let database = ctx.database_location()?;
    let sqlite = matches!(database, Location::Sqlite(_));
    let local_worker = if args.local_worker || (sqlite && !args.no_local_worker) {
        Some(LocalWorker {
            name: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            workdir: ctx.settings.workdir.clone(),
            backend: ctx.backend.clone(),
            program: std::env::current_exe().context("cannot find this program")?,
            capabilities: autogentoo_farm::worker::detect_capabilities(&ctx.backend, &[])?,
        })
    } else {
        None
    };
    server::serve(ServeOptions {
        listen: args.listen,
        tls,
        database,
        config_file,
        data_dir: args
            .data_dir
            .unwrap_or_else(|| ctx.settings.workdir.join("farm-server")),
        heartbeat: Duration::from_secs(args.heartbeat.max(1)),
        dead_after: Duration::from_secs(args.dead_after.max(args.heartbeat.max(1) * 2)),
        local_worker,
    })?;
    Ok(())
}
