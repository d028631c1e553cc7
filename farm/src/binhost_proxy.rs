//! The farm's binhost for one build, on loopback: a build host serves its job's arch's binhost
//! at `http://127.0.0.1:PORT` for as long as the build runs, and the build's roots use it as
//! their `PORTAGE_BINHOST` with `FEATURES=getbinpkg` (`autogentoo --binhost URL`). Portage
//! fetches the `Packages` index and only the packages it installs, through the worker, which
//! adds its own credential and TLS: no secret and no CA certificate enter the root, and a host
//! holds only what its builds install.
//!
//! It answers GET of `Packages` and of `CATEGORY/PN/FILE` (a package's `PATH`), nothing else.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::client::{Client, ClientError};

/// A running loopback binhost; stopped when dropped.
pub struct BinhostProxy {
    url: String,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl BinhostProxy {
    /// Serves `arch`'s binhost of the server `host` talks to, with `host`'s credential, on a
    /// free loopback port.
    pub fn start(host: Client, arch: &str) -> std::io::Result<Self> {
        let server = Server::http("127.0.0.1:0").map_err(std::io::Error::other)?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .ok_or_else(|| std::io::Error::other("the loopback binhost has no port"))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (server, stop, served, arch) = (
                server.clone(),
                stop.clone(),
                served.clone(),
                arch.to_owned(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match server.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(request)) => {
                            let (host, arch, served) = (host.clone(), arch.clone(), served.clone());
                            // One thread per request: Portage fetches one file at a time, and
                            // a slow package never holds up the index.
                            std::thread::spawn(move || answer(&host, &arch, request, &served));
                        }
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            })
        };
        Ok(Self {
            url: format!("http://127.0.0.1:{port}"),
            server,
            stop,
            served,
            thread: Some(thread),
        })
    }

    /// Where the build's roots find it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many packages it handed out so far.
    pub fn packages_served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for BinhostProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a request asks for, as a path under the binhost, if it is something a binhost has.
fn wanted(method: &Method, url: &str) -> Option<String> {
    if *method != Method::Get && *method != Method::Head {
        return None;
    }
    let path = url.split('?').next()?.strip_prefix('/')?;
    if path == "Packages" || crate::binhost::check_path(path).is_ok() {
        Some(path.to_owned())
    } else {
        None
    }
}

fn answer(host: &Client, arch: &str, request: Request, served: &AtomicUsize) {
    let Some(path) = wanted(request.method(), request.url()) else {
        let _ = request.respond(Response::empty(StatusCode(404)));
        return;
    };
    match host.get_stream(&format!("/binhost/{arch}/{path}")) {
        Ok(upstream) => {
            let length = upstream.content_length().map(|n| n as usize);
            let kind = if path == "Packages" {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            };
            let header = Header::from_bytes("Content-Type", kind).ok();
            let body: Box<dyn Read + Send> = Box::new(upstream);
            let response = Response::new(
                StatusCode(200),
                header.into_iter().collect(),
                body,
                length,
                None,
            );
            if request.respond(response).is_ok() && path != "Packages" {
                served.fetch_add(1, Ordering::SeqCst);
            }
        }
        Err(error) => {
            let status = match &error {
                ClientError::Refused { status, .. } if status.as_u16() == 404 => 404,
                _ => 502,
            };
            eprintln!("binhost: {path}: {}", crate::worker::one_line(&error));
            let _ = request.respond(Response::empty(StatusCode(status)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_index_and_package_paths_are_asked_for() {
        let get = Method::Get;
        assert_eq!(wanted(&get, "/Packages").as_deref(), Some("Packages"));
        assert_eq!(
            wanted(&get, "/app-misc/hello/hello-1.0-1.gpkg.tar").as_deref(),
            Some("app-misc/hello/hello-1.0-1.gpkg.tar")
        );
        assert_eq!(wanted(&get, "/../jobs/x/site"), None);
        assert_eq!(wanted(&get, "/app-misc/../../hosts/lease"), None);
        assert_eq!(wanted(&get, "/"), None);
        assert_eq!(wanted(&Method::Post, "/Packages"), None);
    }
}
