//! TLS for the farm: rustls with the ring provider in every process (server, hosts, clients),
//! and a client that trusts the farm's own CA when given one.

use std::path::Path;
use std::sync::Arc;

/// Installs ring as the process's crypto provider (once; later calls do nothing). rustls
/// 0.23.48 marks ring's provider deprecated for lacking post-quantum key exchange; ring is
/// still the one provider this project builds with (aws-lc-rs needs cmake and a C toolchain
/// at build time), so its warning is allowed here and only here.
#[allow(deprecated)]
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client configuration that trusts the PEM certificates in `ca` (the farm's CA), or the
/// system's roots when `None`.
pub fn client_config(ca: Option<&Path>) -> std::io::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    install_provider();
    let mut roots = rustls::RootCertStore::empty();
    let pem_paths: Vec<std::path::PathBuf> = match ca {
        Some(path) => vec![path.to_owned()],
        None => vec![Path::new("/etc/ssl/certs/ca-certificates.crt").to_owned()],
    };
    for path in pem_paths {
        for cert in CertificateDer::pem_file_iter(&path).map_err(std::io::Error::other)? {
            let cert = cert.map_err(std::io::Error::other)?;
            roots.add(cert).map_err(std::io::Error::other)?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::CryptoProvider::get_default()
            .map(|p| p.as_ref().clone())
            .ok_or_else(|| std::io::Error::other("no TLS crypto provider is installed"))?,
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
