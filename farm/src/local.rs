//! What an admin does on the server's host itself, with the database's own credentials rather
//! than an API token: the first admin token of a new farm.

use autogentoo_db::{Database, DbError, Location};

use crate::api_types::Token;
use crate::role::Role;
use crate::store::Store;

/// Why a token could not be made in the database directly.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot make the token in {shown}")]
    Query {
        shown: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("a token named '{0}' exists; revoke it first, or choose another name")]
    Exists(String),
    #[error("cannot start a runtime for the database")]
    Runtime(#[source] std::io::Error),
}

/// Makes an API token in the farm database at `location` (migrated first), recorded in the
/// audit log as made by `by`.
pub fn create_token(
    location: &Location,
    name: &str,
    role: Role,
    by: &str,
) -> Result<Token, LocalError> {
    drop(Database::open(location)?);
    let shown = location.shown();
    let query = |source| LocalError::Query {
        shown: shown.clone(),
        source,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LocalError::Runtime)?;
    runtime.block_on(async {
        let pool = autogentoo_db::pool_options(location, 1)
            .connect(&location.connect_url())
            .await
            .map_err(query)?;
        let store = Store::new(pool.clone(), crate::queue::jobs_table(location));
        let token = store
            .create_token(name, role, by)
            .await
            .map_err(query)?
            .ok_or_else(|| LocalError::Exists(name.to_owned()))?;
        store
            .audit(by, "token create", name, role.as_str())
            .await
            .map_err(query)?;
        pool.close().await;
        Ok(token)
    })
}
