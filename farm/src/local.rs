//! What an admin does on the server's host itself, with the database's own credentials rather
//! than an API token: the first admin token of a new farm.

use autogentoo_db::{Database, DbError, Location};
use sqlx::postgres::PgPoolOptions;

use crate::api_types::Token;
use crate::role::Role;
use crate::store::Store;

/// Why a token could not be made in the database directly.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("a farm's tokens live in its PostgreSQL database, and {0} is not one")]
    NotPostgres(String),
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
    let Location::Postgres { url } = location else {
        return Err(LocalError::NotPostgres(location.shown()));
    };
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
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .map_err(query)?;
        let store = Store::new(pool.clone());
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
