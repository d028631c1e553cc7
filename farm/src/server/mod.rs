//! `autogentoo serve`: the farm's coordinator. A REST API under `/api/v1` (its OpenAPI
//! document at `/api/v1/openapi.json`, Swagger UI at `/api/v1/docs`), over TLS unless told to
//! listen in plain HTTP on loopback. It holds the build database, the queue, the site config
//! (snapshots by hash), the stages, kernel sources and repository snapshots hosts build from, and
//! the artifacts (all by SHA-256). A farm's database is PostgreSQL; on one
//! machine it is the workdir's SQLite, and the server builds the jobs itself with a worker of
//! its own ([`LocalWorker`]).

mod admin;
mod artifacts;
mod auth;
mod binhost;
mod builds;
mod error;
mod hosts;
mod inputs;
mod jobs;
mod local_worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use autogentoo_db::{Database, Location};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::queue::{Queue, QueueError};
use crate::store::Store;

pub use error::ApiError;
pub use local_worker::LocalWorker;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("plain HTTP is only for a loopback address, not {0}: give --tls-cert and --tls-key")]
    PlainNotLoopback(SocketAddr),
    #[error(transparent)]
    Db(#[from] autogentoo_db::DbError),
    #[error("cannot connect to the farm's database {shown}")]
    Connect {
        shown: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot set up the queue in the farm's database")]
    Queue(#[source] QueueError),
    #[error("cannot make an enrollment key for the server's own worker")]
    LocalKey(#[source] sqlx::Error),
    #[error("the server's own worker stopped: {0}")]
    LocalWorker(String),
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
    /// A worker of the server's own, building on this machine.
    pub local_worker: Option<LocalWorker>,
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
        description = "Builds, jobs, build hosts, inputs, keys and tokens of an autogentoo build farm."
    ),
    servers((url = "/api/v1")),
    modifiers(&Credentials)
)]
struct ApiDoc;

/// Credentials go as `Authorization: Bearer SECRET`; the binhost also takes the secret as an HTTP
/// Basic password, which is what Portage can send.
struct Credentials;

impl utoipa::Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
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
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::lease))
        .routes(routes!(jobs::post_events))
        .routes(routes!(jobs::result))
        .routes(routes!(jobs::site))
        .routes(routes!(artifacts::offset, artifacts::upload))
        .routes(routes!(inputs::offset, inputs::upload))
        .routes(routes!(inputs::add))
        .routes(routes!(inputs::list))
        .routes(routes!(inputs::fetch))
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
        .routes(routes!(binhost::packages))
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
        let (store, queue) = connect(&options).await?;
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let state = Arc::new(AppState {
            store,
            queue,
            db,
            config_file: options.config_file.clone(),
            data_dir: options.data_dir.clone(),
            events,
            work: tokio::sync::Notify::new(),
            binhost: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(hosts::requeue_loop(state.clone()));
        let app = router(state.clone());
        let listener = std::net::TcpListener::bind(options.listen)
            .map_err(|e| ServeError::Listen(options.listen, e))?;
        let bound = listener.local_addr().unwrap_or(options.listen);
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        eprintln!("serving the farm API at {scheme}://{bound}/api/v1");
        let handle = axum_server::Handle::new();
        let mut handles = vec![handle.clone()];
        // The server's own worker reaches it in plain HTTP on loopback: on the listener itself
        // when that is one, else on one of its own.
        let local = match &options.local_worker {
            None => None,
            Some(local) => {
                let at = if options.tls.is_none() {
                    bound
                } else {
                    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
                    let internal = std::net::TcpListener::bind(loopback)
                        .map_err(|e| ServeError::Listen(loopback, e))?;
                    let at = internal.local_addr().unwrap_or(loopback);
                    let handle = axum_server::Handle::new();
                    handles.push(handle.clone());
                    let server = axum_server::from_tcp(internal)
                        .map_err(|e| ServeError::Listen(at, e))?
                        .handle(handle)
                        .serve(app.clone().into_make_service());
                    tokio::spawn(server);
                    at
                };
                Some(local_worker::start(&state, local, at).await?)
            }
        };
        let stopping = tokio::spawn(shutdown(handles, local));
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
        served.map_err(|e| ServeError::Listen(options.listen, e))?;
        match stopping.await {
            Ok(Some(why)) => Err(ServeError::LocalWorker(why)),
            _ => Ok(()),
        }
    });
    drop(runtime);
    drop(closing);
    served
}

/// The store's and the queue's connections to the build database: apalis's PostgreSQL storage
/// for a farm, its SQLite storage on one machine.
async fn connect(options: &ServeOptions) -> Result<(Store, Queue), ServeError> {
    let shown = options.database.shown();
    let failed = |source| ServeError::Connect {
        shown: shown.clone(),
        source,
    };
    let url = options.database.connect_url();
    let sqlite = matches!(options.database, Location::Sqlite(_));
    let any = autogentoo_db::pool_options(&options.database, if sqlite { 4 } else { 16 })
        .connect(&url)
        .await
        .map_err(failed)?;
    let store = Store::new(any, crate::queue::jobs_table(&options.database));
    let queue = match &options.database {
        Location::Postgres { url } => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(16)
                .connect(url)
                .await
                .map_err(failed)?;
            Queue::postgres(pool, options.heartbeat, options.dead_after).await
        }
        Location::Sqlite(_) => {
            use std::str::FromStr as _;
            let connect = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                .map_err(failed)?
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(connect)
                .await
                .map_err(failed)?;
            Queue::sqlite(pool, options.heartbeat, options.dead_after).await
        }
    }
    .map_err(ServeError::Queue)?;
    Ok((store, queue))
}

/// On SIGINT or SIGTERM, or when the server's own worker ends on its own: stops that worker
/// first (it gives its job back through the server), then the listeners. Returns why the
/// worker failed, if it did.
async fn shutdown(
    handles: Vec<axum_server::Handle<SocketAddr>>,
    local: Option<local_worker::Running>,
) -> Option<String> {
    let ended = async {
        match &local {
            Some(running) => running.ended().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = signalled() => {}
        () = ended => {}
    }
    let why = match local {
        Some(running) => running.stop().await,
        None => None,
    };
    for handle in handles {
        handle.graceful_shutdown(Some(Duration::from_secs(5)));
    }
    why
}

/// SIGINT or SIGTERM.
async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
