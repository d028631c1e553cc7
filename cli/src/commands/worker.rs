//! `autogentoo worker`: a build host of a farm (the `autogentoo-farm` crate's worker).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use autogentoo_farm::worker::{self, WorkerOptions};
use clap::Args;

use crate::context::Context;

/// Take build jobs from a farm server
///
/// Run as a build host of the farm at --server: enroll once with a one-time key
/// (--enroll-key-file; the host's own credential is then kept in WORKDIR/farm/, readable by
/// root only), say what this host can build (its arches, natively or through qemu-user, and
/// its backend), and run the jobs the server hands out as `autogentoo build` of this workdir,
/// streaming their events and uploading their results. Stages must be imported here (`stage
/// import`). Stops on SIGINT or SIGTERM after the job it runs.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The farm server (`https://HOST:PORT`)
    #[arg(long, env = "AUTOGENTOO_SERVER", value_name = "URL")]
    pub server: String,

    /// The farm's CA certificate (PEM) to trust, instead of the system's roots
    #[arg(long, env = "AUTOGENTOO_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// This host's name on the farm [default: its host name]
    #[arg(long)]
    pub name: Option<String>,

    /// A file holding a one-time enrollment key, for the first start
    #[arg(long, value_name = "FILE")]
    pub enroll_key_file: Option<PathBuf>,

    /// Take jobs of these arches only (of those this host can build), e.g. `amd64` to keep
    /// emulated builds off it [default: every arch it can build]
    #[arg(long, value_delimiter = ',', value_name = "ARCH,…")]
    pub arches: Vec<String>,
}

pub fn run(ctx: &Context, args: WorkerArgs) -> Result<()> {
    let name = match args.name {
        Some(name) => name,
        None => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    };
    autogentoo_farm::check_name(&name).map_err(anyhow::Error::msg)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot handle SIGINT and SIGTERM")?;
    }
    let options = WorkerOptions {
        server: args.server,
        ca: args.ca,
        name,
        workdir: ctx.settings.workdir.clone(),
        backend: ctx.backend.clone(),
        program: std::env::current_exe().context("cannot find this program")?,
        enroll_key_file: args.enroll_key_file,
        capabilities: worker::detect_capabilities(&ctx.backend, &args.arches)?,
        database: ctx.settings.workdir.join(autogentoo_db::SQLITE_FILE),
        credential: ctx.settings.workdir.join("farm").join("host-credential"),
    };
    worker::run(&options, &stop)?;
    Ok(())
}
