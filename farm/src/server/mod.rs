//! `autogentoo serve`: the farm's coordinator. A REST API under `/api/v1` (its OpenAPI
//! document at `/api/v1/openapi.json`, Swagger UI at `/api/v1/docs`), over TLS unless told to
//! listen in plain HTTP on loopback. It holds the build database, the queue, the site config
//! (snapshots by hash), and the artifacts (by SHA-256).

mod admin;
mod artifacts;
mod auth;
mod binhost;
mod builds;
mod error;
mod hosts;
mod jobs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use autogentoo_db::{Database, Location};
use sqlx::postgres::PgPoolOptions;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::queue::Queue;
use crate::store::Store;

pub use error::ApiError;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("plain HTTP is only for a loopback address, not {0}: give --tls-cert and --tls-key")]
    PlainNotLoopback(SocketAddr),
    #[error("the farm needs PostgreSQL for its queue; {0} is not a postgres:// database")]
    NotPostgres(String),
    #[error(transparent)]
    Db(#[from] autogentoo_db::DbError),
    #[error("cannot connect to the farm's database {shown}")]
    Connect {
        shown: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot set up the queue in the farm's database")]
    Queue(#[source] apalis_postgres::Error),
    #[error("cannot read the TLS certificate and key")]
    Tls(#[source] std::io::Error),
    #[error("cannot make the server's directory {}", .0.display())]
    DataDir(PathBuf, #[source] std::io::Error),
    #[error("cannot listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("cannot start the server's runtime")]
    Runtime(#[source] std::io::Error),
}

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// PEM certificate chain and key; `None` for plain HTTP (loopback only).
    pub tls: Option<(PathBuf, PathBuf)>,
    pub database: Location,
    /// The site config file; its directory is what jobs build with.
    pub config_file: PathBuf,
    /// Where the server keeps site snapshots, uploads, artifacts and builds' results.
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    pub dead_after: Duration,
}

/// What every handler shares.
pub struct AppState {
    pub store: Store,
    pub queue: Queue,
    /// The build database (its API blocks: used from blocking tasks).
    pub db: Arc<Database>,
    pub config_file: PathBuf,
    pub data_dir: PathBuf,
    /// Wakes the event streams: the id of a job that got events or ended.
    pub events: tokio::sync::broadcast::Sender<String>,
    /// Publishing to a binhost, one at a time (its index is rewritten whole).
    pub binhost: tokio::sync::Mutex<()>,
    /// Wakes the lease requests that wait: one for a job submitted, all for jobs given back.
    pub work: tokio::sync::Notify,
}

impl AppState {
    /// Runs a build database call on a blocking thread.
    pub async fn db<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Database) -> Result<T, autogentoo_db::DbError> + Send + 'static,
    ) -> Result<Result<T, autogentoo_db::DbError>, ApiError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || call(&db))
            .await
            .map_err(|e| ApiError::internal("run a database call", e))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "autogentoo farm API",
        description = "Builds, jobs, build hosts, keys and tokens of an autogentoo build farm."
    ),
    servers((url = "/api/v1")),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API: a list of endpoints, each documented where it is written.
fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(builds::list))
        .routes(routes!(builds::show))
        .routes(routes!(builds::log))
        .routes(routes!(builds::events))
        .routes(routes!(builds::artifact))
        .routes(routes!(builds::keep))
        .routes(routes!(builds::publish))
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::show))
        .routes(routes!(jobs::post_events))
        .routes(routes!(jobs::result))
        .routes(routes!(jobs::site))
        .routes(routes!(artifacts::offset, artifacts::upload))
        .routes(routes!(hosts::enroll))
        .routes(routes!(hosts::hello))
        .routes(routes!(hosts::heartbeat))
        .routes(routes!(hosts::lease))
        .routes(routes!(hosts::list))
        .routes(routes!(hosts::revoke))
        .routes(routes!(admin::create_key))
        .routes(routes!(admin::create_token, admin::list_tokens))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(admin::audit))
        .routes(routes!(binhost::index))
        .routes(routes!(binhost::file))
        .routes(routes!(binhost::publish))
}

/// The OpenAPI document the server serves at `/api/v1/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// The server's routes: the API, its document, and Swagger UI.
fn router(state: Arc<AppState>) -> axum::Router {
    let (api, openapi) = api().with_state(state).split_for_parts();
    let document = Arc::new(openapi);
    let served = document.clone();
    axum::Router::new()
        .nest("/api/v1", api)
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || async move { axum::Json(served.as_ref().clone()) }),
        )
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/api/v1/docs")
                .url("/api/v1/docs/openapi.json", document.as_ref().clone()),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
}

/// Runs the server until SIGINT or SIGTERM.
pub fn serve(options: ServeOptions) -> Result<(), ServeError> {
    crate::tls::install_provider();
    if options.tls.is_none() && !options.listen.ip().is_loopback() {
        return Err(ServeError::PlainNotLoopback(options.listen));
    }
    let Location::Postgres { url } = options.database.clone() else {
        return Err(ServeError::NotPostgres(options.database.shown()));
    };
    for dir in [
        "sites",
        "artifacts",
        "uploads",
        "out",
        "published",
        "binhost",
    ] {
        let path = options.data_dir.join(dir);
        std::fs::create_dir_all(&path).map_err(|e| ServeError::DataDir(path, e))?;
    }
    // Opening applies the build database's migrations (the farm's tables among them).
    let db = Arc::new(Database::open(&options.database)?);
    // The database closes on its own runtime: its last handle is dropped here, after the
    // server's runtime is gone, never on one of that runtime's threads.
    let closing = db.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let served = runtime.block_on(async move {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(&url)
            .await
            .map_err(|source| ServeError::Connect {
                shown: options.database.shown(),
                source,
            })?;
        let queue = Queue::setup(pool.clone(), options.heartbeat, options.dead_after)
            .await
            .map_err(ServeError::Queue)?;
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let state = Arc::new(AppState {
            store: Store::new(pool),
            queue,
            db,
            config_file: options.config_file.clone(),
            data_dir: options.data_dir.clone(),
            events,
            work: tokio::sync::Notify::new(),
            binhost: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(hosts::requeue_loop(state.clone()));
        let app = router(state);
        let handle = axum_server::Handle::new();
        tokio::spawn(shutdown_on_signal(handle.clone()));
        let listener = std::net::TcpListener::bind(options.listen)
            .map_err(|e| ServeError::Listen(options.listen, e))?;
        let bound = listener.local_addr().unwrap_or(options.listen);
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        eprintln!("serving the farm API at {scheme}://{bound}/api/v1");
        let served = match &options.tls {
            Some((cert, key)) => {
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(ServeError::Tls)?;
                axum_server::from_tcp_rustls(listener, tls)
                    .map_err(|e| ServeError::Listen(options.listen, e))?
                    .handle(handle)
                    .serve(app.into_make_service())
                    .await
            }
            None => {
                axum_server::from_tcp(listener)
                    .map_err(|e| ServeError::Listen(options.listen, e))?
                    .handle(handle)
                    .serve(app.into_make_service())
                    .await
            }
        };
        served.map_err(|e| ServeError::Listen(options.listen, e))
    });
    drop(runtime);
    drop(closing);
    served
}

async fn shutdown_on_signal(handle: axum_server::Handle<SocketAddr>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    handle.graceful_shutdown(Some(Duration::from_secs(5)));
}
