//! The API's client: the command line against `--server URL`, and the build hosts. Blocking
//! (the command line has no runtime of its own). TLS always, but to a loopback address.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api_types::ApiErrorBody;
use crate::api_types::{UPLOAD_LENGTH as LENGTH, UPLOAD_OFFSET as OFFSET};

/// How long a request may take, unless it is a stream: a server or link that hangs is given
/// up on, and the caller retries.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How much of an artifact goes in one request.
const UPLOAD_CHUNK: u64 = 8 << 20;

/// Why a request to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "`{0}` is not a farm server URL: use https://HOST[:PORT] (http:// only for a loopback \
         address)"
    )]
    BadUrl(String),
    #[error("cannot read the farm's CA certificate {}", path.display())]
    Ca {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the farm server at {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error: its status and its one line.
    #[error("the farm server refused {what}: {message} ({status})")]
    Refused {
        what: String,
        status: StatusCode,
        message: String,
    },
    #[error("cannot read {}", path.display())]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A connection to a farm server, with a bearer credential.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: Http,
    secret: Option<String>,
}

impl Client {
    /// A client of the server at `server` (`https://HOST:PORT`), trusting `ca` (PEM) or the
    /// system's roots.
    pub fn new(
        server: &str,
        ca: Option<&Path>,
        secret: Option<String>,
    ) -> Result<Self, ClientError> {
        let base = server.trim_end_matches('/');
        let url = reqwest::Url::parse(base).map_err(|_| ClientError::BadUrl(server.to_owned()))?;
        let host = url.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err(ClientError::BadUrl(server.to_owned())),
        }
        let tls = crate::tls::client_config(ca).map_err(|source| ClientError::Ca {
            path: ca.map(Path::to_owned).unwrap_or_default(),
            source,
        })?;
        let http = Http::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(None)
            .build()
            .map_err(|source| ClientError::Connect {
                url: base.to_owned(),
                source,
            })?;
        Ok(Self {
            base: format!("{base}/api/v1"),
            http,
            secret,
        })
    }

    /// The same server with another credential (a job's).
    pub fn with_secret(&self, secret: String) -> Self {
        Self {
            secret: Some(secret),
            ..self.clone()
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(REQUEST_TIMEOUT);
        match &self.secret {
            Some(secret) => request.bearer_auth(secret),
            None => request,
        }
    }

    fn send(&self, what: &str, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().map_err(|source| ClientError::Connect {
            url: self.base.clone(),
            source,
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let message = response
            .json::<ApiErrorBody>()
            .map(|body| body.error)
            .unwrap_or_else(|_| status.canonical_reason().unwrap_or("error").to_owned());
        Err(ClientError::Refused {
            what: what.to_owned(),
            status,
            message,
        })
    }

    fn json<T: DeserializeOwned>(&self, what: &str, response: Response) -> Result<T, ClientError> {
        response.json().map_err(|source| ClientError::Connect {
            url: format!("{} ({what})", self.base),
            source,
        })
    }

    /// GET `path`, as JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let what = format!("GET {path}");
        let response = self.send(&what, self.request(Method::GET, path))?;
        self.json(&what, response)
    }

    /// POST `body` as JSON to `path`; the answer as JSON, or `None` for 204.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<T>, ClientError> {
        self.send_json(Method::POST, path, body)
    }

    /// PUT `body` as JSON to `path`; the answer as JSON, or `None` for 204.
    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<T>, ClientError> {
        self.send_json(Method::PUT, path, body)
    }

    fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<Option<T>, ClientError> {
        let what = format!("{method} {path}");
        let response = self.send(&what, self.request(method, path).json(body))?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        self.json(&what, response).map(Some)
    }

    /// POST text to `path`, expecting no answer.
    pub fn post_text(
        &self,
        path: &str,
        content_type: &str,
        text: String,
    ) -> Result<(), ClientError> {
        let request = self
            .request(Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(text);
        self.send(&format!("POST {path}"), request).map(drop)
    }

    /// GET `path`, expecting only a status: success, or the refusal.
    pub fn get_status(&self, path: &str) -> Result<(), ClientError> {
        self.send(&format!("GET {path}"), self.request(Method::GET, path))
            .map(drop)
    }

    /// GET `path` as bytes.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let what = format!("GET {path}");
        let response = self.send(&what, self.request(Method::GET, path))?;
        response
            .bytes()
            .map(|b| b.to_vec())
            .map_err(|source| ClientError::Connect {
                url: self.base.clone(),
                source,
            })
    }

    /// GET `path` as a stream of bytes (a large file: the transfer takes as long as it needs).
    pub fn get_stream(&self, path: &str) -> Result<Response, ClientError> {
        self.send(
            &format!("GET {path}"),
            self.request(Method::GET, path)
                .timeout(Duration::from_secs(24 * 3600)),
        )
    }

    /// GET `path` into `file` (created or truncated); returns the SHA-256 of what came.
    pub fn download(&self, path: &str, file: &Path) -> Result<String, ClientError> {
        use sha2::Digest;
        let response = self.get_stream(path)?;
        let file_error = |source| ClientError::File {
            path: file.to_owned(),
            source,
        };
        let mut out = std::fs::File::create(file).map_err(file_error)?;
        let mut hasher = sha2::Sha256::new();
        let mut reader = std::io::BufReader::with_capacity(1 << 20, response);
        loop {
            let chunk = reader.fill_buf().map_err(|source| ClientError::File {
                path: path.into(),
                source,
            })?;
            if chunk.is_empty() {
                break;
            }
            hasher.update(chunk);
            out.write_all(chunk).map_err(file_error)?;
            let n = chunk.len();
            reader.consume(n);
        }
        out.sync_all().map_err(file_error)?;
        Ok(crate::secret::hex(&hasher.finalize()))
    }

    /// GET `path` as server-sent events: calls `each` with each event's data, until the stream
    /// ends (or `each` returns false).
    pub fn events(
        &self,
        path: &str,
        mut each: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let what = format!("GET {path}");
        let response = self.send(
            &what,
            self.request(Method::GET, path)
                // A stream lasts as long as the build.
                .timeout(Duration::from_secs(7 * 24 * 3600))
                .header(reqwest::header::ACCEPT, "text/event-stream"),
        )?;
        let mut data = String::new();
        for line in BufReader::new(response).lines() {
            let line = line.map_err(|source| ClientError::File {
                path: path.into(),
                source,
            })?;
            if let Some(rest) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            } else if line.is_empty() && !data.is_empty() {
                if !each(&data) {
                    return Ok(());
                }
                data.clear();
            }
        }
        Ok(())
    }

    /// Uploads `file` (whose SHA-256 is `sha256`) as an artifact of `job`, resuming where an
    /// earlier upload stopped; nothing is sent when the server has it already.
    pub fn upload_artifact(&self, job: &str, file: &Path, sha256: &str) -> Result<(), ClientError> {
        self.upload_content(&format!("/jobs/{job}/artifacts"), file, sha256)
    }

    /// Uploads `file` (whose SHA-256 is `sha256`) to `PREFIX/SHA256`, resuming where an
    /// earlier upload stopped (`HEAD` says where); nothing is sent when the server has it.
    pub fn upload_content(
        &self,
        prefix: &str,
        file: &Path,
        sha256: &str,
    ) -> Result<(), ClientError> {
        let path = format!("{prefix}/{sha256}");
        let what = format!("the upload of {}", file.display());
        let file_error = |source| ClientError::File {
            path: file.to_owned(),
            source,
        };
        let mut handle = std::fs::File::open(file).map_err(file_error)?;
        let length = handle.metadata().map_err(file_error)?.len();
        let head =
            self.request(Method::HEAD, &path)
                .send()
                .map_err(|source| ClientError::Connect {
                    url: self.base.clone(),
                    source,
                })?;
        let head = if head.status().is_success() {
            head
        } else {
            // An answer to HEAD has no body to say why: the same request as an empty PATCH
            // gets the server's words (and changes nothing).
            self.send(
                &what,
                self.request(Method::PATCH, &path)
                    .header(OFFSET, 0)
                    .header(LENGTH, length)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/offset+octet-stream",
                    )
                    .body(Vec::new()),
            )?
        };
        if head.status() == StatusCode::OK || head.status() == StatusCode::CREATED {
            return Ok(());
        }
        let mut offset = header_number(&head, OFFSET).unwrap_or(0);
        loop {
            let size = UPLOAD_CHUNK.min(length - offset);
            handle.seek(SeekFrom::Start(offset)).map_err(file_error)?;
            let mut chunk = Vec::with_capacity(size as usize);
            (&mut handle)
                .take(size)
                .read_to_end(&mut chunk)
                .map_err(file_error)?;
            let response = self.send(
                &what,
                self.request(Method::PATCH, &path)
                    .header(OFFSET, offset)
                    .header(LENGTH, length)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/offset+octet-stream",
                    )
                    .body(chunk),
            )?;
            if response.status() == StatusCode::CREATED {
                return Ok(());
            }
            offset = header_number(&response, OFFSET).unwrap_or(offset + size);
        }
    }
}

fn header_number(response: &Response, name: &str) -> Option<u64> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
