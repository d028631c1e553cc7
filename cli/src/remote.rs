//! The command line as a client of a farm server (`--server URL`): the same listings and
//! `--json` as against the local database, from the server's.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use autogentoo_farm::client::Client;
use clap::Args;

/// Where the farm server is, and who is asking.
#[derive(Args, Debug, Clone)]
pub struct RemoteArgs {
    /// A farm server (`https://HOST:PORT`): ask it instead of the local database
    #[arg(long, env = "AUTOGENTOO_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// The farm's CA certificate (PEM) to trust, instead of the system's roots
    #[arg(long, env = "AUTOGENTOO_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// The file holding your API token (`farm token create` printed it)
    #[arg(long, env = "AUTOGENTOO_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl RemoteArgs {
    /// A client of `--server`, or `None` when no server is given.
    pub fn client(&self) -> Result<Option<Client>> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        let token = match &self.token_file {
            Some(path) => Some(
                autogentoo_farm::secret::read_file(path)
                    .with_context(|| format!("cannot read the API token in {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Some(Client::new(server, self.ca.as_deref(), token)?))
    }

    /// A client of `--server`, which this command needs.
    pub fn require(&self, command: &str) -> Result<Client> {
        self.client()?.with_context(|| {
            format!("`{command}` talks to a farm server: give --server URL (or AUTOGENTOO_SERVER)")
        })
    }
}
