//! `/binhost/{arch}`: the binary packages hosts built, per arch, as a Portage binhost (its
//! `Packages` index and the packages under their `PATH`); and a job's host publishing the
//! packages its build made (`/jobs/{id}/packages`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::{JobAuth, Reader};
use super::error::{ApiError, ApiResult};
use super::jobs::artifacts_ok;
use super::AppState;
use crate::api_types::{Package, Published};
use crate::binhost::{check_entry, check_path};

/// A binhost as the server keeps it: its packages by path, and when it last grew.
#[derive(Default, Serialize, Deserialize)]
struct Binhost {
    /// Seconds since the epoch; each publication that adds a package makes it larger, so that
    /// Portage, which fetches the index again only for a newer `TIMESTAMP`, sees the change.
    timestamp: u64,
    packages: BTreeMap<String, Package>,
}

/// Where the server keeps `arch`'s binhost (`index.json`, and the packages under their paths).
fn tree(state: &AppState, arch: &str) -> std::path::PathBuf {
    state.data_dir.join("binhost").join(arch)
}

async fn read_binhost(state: &AppState, arch: &str) -> ApiResult<Binhost> {
    match tokio::fs::read(tree(state, arch).join("index.json")).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::internal("read a binhost index", e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Binhost::default()),
        Err(e) => Err(ApiError::internal("read a binhost index", e)),
    }
}

fn check_arch(arch: &str) -> ApiResult<()> {
    autogentoo_core::arch::Arch::named(arch)
        .map(drop)
        .ok_or_else(|| ApiError::NotFound(format!("no binhost for `{arch}`: not an arch")))
}

/// The binary packages of `arch`'s binhost.
#[utoipa::path(get, path = "/binhost/{arch}", params(("arch" = String, Path)),
    security(("bearer" = []), ("basic" = [])), responses((status = 200, body = Vec<Package>)))]
pub async fn index(
    State(state): State<Arc<AppState>>,
    _reader: Reader,
    Path(arch): Path<String>,
) -> ApiResult<Json<Vec<Package>>> {
    check_arch(&arch)?;
    Ok(Json(
        read_binhost(&state, &arch)
            .await?
            .packages
            .into_values()
            .collect(),
    ))
}

/// `arch`'s binhost's Portage `Packages` index: this URL without `/Packages` is a binhost for
/// `binrepos.conf` (`sync-uri = https://x:TOKEN@SERVER/api/v1/binhost/ARCH`; Portage sends the
/// token by HTTP Basic).
#[utoipa::path(get, path = "/binhost/{arch}/Packages", params(("arch" = String, Path)),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn packages(
    State(state): State<Arc<AppState>>,
    _reader: Reader,
    Path(arch): Path<String>,
) -> ApiResult<impl IntoResponse> {
    check_arch(&arch)?;
    let binhost = read_binhost(&state, &arch).await?;
    let text = crate::binhost::write_index(&arch, binhost.timestamp, binhost.packages.values());
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

/// A binary package of `arch`'s binhost, at its `PATH` in the index.
#[utoipa::path(get, path = "/binhost/{arch}/{category}/{pn}/{file}",
    security(("bearer" = []), ("basic" = [])),
    params(("arch" = String, Path), ("category" = String, Path), ("pn" = String, Path),
        ("file" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>)))]
pub async fn file(
    State(state): State<Arc<AppState>>,
    _reader: Reader,
    Path((arch, category, pn, file)): Path<(String, String, String, String)>,
) -> ApiResult<Body> {
    check_arch(&arch)?;
    let path = format!("{category}/{pn}/{file}");
    check_path(&path).map_err(ApiError::BadRequest)?;
    if !read_binhost(&state, &arch)
        .await?
        .packages
        .contains_key(&path)
    {
        return Err(ApiError::NotFound(format!(
            "the {arch} binhost has no {path}"
        )));
    }
    let file = tokio::fs::File::open(tree(&state, &arch).join(&path))
        .await
        .map_err(|e| ApiError::internal("read a binary package", e))?;
    Ok(Body::from_stream(super::builds::file_stream(file)))
}

/// Publishes binary packages a job's build made (uploaded first as its artifacts) to the
/// binhost of the job's arch. A path the binhost has already keeps its first package.
#[utoipa::path(post, path = "/jobs/{id}/packages", params(("id" = String, Path)),
    request_body = Vec<Package>, security(("bearer" = [])),
    responses((status = 200, body = Published)))]
pub async fn publish(
    State(state): State<Arc<AppState>>,
    auth: JobAuth,
    Path(id): Path<String>,
    Json(packages): Json<Vec<Package>>,
) -> ApiResult<Json<Published>> {
    let job = auth.for_job(&id)?.clone();
    super::jobs::require_lease(&state, &job).await?;
    let store = state.data_dir.join("artifacts");
    for package in &packages {
        check_path(&package.path).map_err(ApiError::BadRequest)?;
        if !package.metadata.is_empty() {
            check_entry(package).map_err(ApiError::BadRequest)?;
        }
        if !artifacts_ok(&package.sha256) || !store.join(&package.sha256).is_file() {
            return Err(ApiError::BadRequest(format!(
                "package {} ({}) was not uploaded; upload it to /jobs/{id}/artifacts/SHA256 first",
                package.path, package.sha256
            )));
        }
    }
    let _writing = state.binhost.lock().await;
    let tree = tree(&state, &job.arch);
    let mut binhost = read_binhost(&state, &job.arch).await?;
    let mut published = Published {
        added: Vec::new(),
        kept: Vec::new(),
    };
    for package in packages {
        if binhost.packages.contains_key(&package.path) {
            published.kept.push(package.path);
            continue;
        }
        let target = tree.join(&package.path);
        let source = store.join(&package.sha256);
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(target.parent().unwrap_or(&target))?;
            let _ = std::fs::remove_file(&target);
            std::fs::hard_link(source, &target)
        })
        .await
        .map_err(|e| ApiError::internal("publish a binary package", e))?
        .map_err(|e| ApiError::internal("publish a binary package", e))?;
        published.added.push(package.path.clone());
        binhost.packages.insert(package.path.clone(), package);
    }
    if !published.added.is_empty() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        binhost.timestamp = now.max(binhost.timestamp + 1);
    }
    let bytes = serde_json::to_vec_pretty(&binhost).unwrap_or_default();
    let path = tree.join("index.json");
    let partial = path.with_extension("json.partial");
    let io = |e| ApiError::internal("write a binhost index", e);
    tokio::fs::create_dir_all(&tree).await.map_err(io)?;
    tokio::fs::write(&partial, bytes).await.map_err(io)?;
    tokio::fs::rename(&partial, &path).await.map_err(io)?;
    if !published.added.is_empty() {
        let detail = published.added.join(" ");
        state
            .store
            .audit(
                job.host.as_deref().unwrap_or_default(),
                "binhost publish",
                &job.arch,
                &detail,
            )
            .await?;
    }
    Ok(Json(published))
}
