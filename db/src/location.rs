//! Where the build database is: SQLite in the workdir by default, PostgreSQL when the site
//! config or the environment names a URL. The password is read from a file or comes with the
//! environment's URL; it is never in the site config, and never shown.

use std::path::{Path, PathBuf};

use autogentoo_core::site_config::DatabaseSection;

use crate::DbError;

/// The environment variable whose URL overrides the site config's `[database]`. (Not
/// `DATABASE_URL`: at build time that one changes how crates with prepared queries build.)
pub const URL_VAR: &str = "AUTOGENTOO_DATABASE_URL";

/// The database's file in the workdir, when no URL is given.
pub const SQLITE_FILE: &str = "autogentoo.db";

/// A build database.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file, created when missing.
    Sqlite(PathBuf),
    /// A PostgreSQL server; `url` may hold the password, so it is never shown.
    Postgres { url: String },
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Location {
    /// The database to use: the environment's URL (`env_url`, from [`URL_VAR`]), else the site
    /// config's `[database] url` with the password from its `password_file`, else SQLite at
    /// `WORKDIR/autogentoo.db`.
    pub fn resolve(
        env_url: Option<String>,
        section: &DatabaseSection,
        workdir: &Path,
    ) -> Result<Self, DbError> {
        if let Some(url) = env_url.filter(|url| !url.is_empty()) {
            return Self::parse(&url);
        }
        let Some(url) = &section.url else {
            return Ok(Self::Sqlite(workdir.join(SQLITE_FILE)));
        };
        let mut url = url.clone();
        if let Some(path) = &section.password_file {
            let text = std::fs::read_to_string(path).map_err(|source| DbError::Password {
                path: path.clone(),
                source,
            })?;
            url = with_password(&url, text.trim_end_matches(['\n', '\r']));
        }
        Self::parse(&url)
    }

    /// A `sqlite://PATH` or `postgres://…` URL.
    pub fn parse(url: &str) -> Result<Self, DbError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or(path);
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres {
                url: with_tls_default(url),
            });
        }
        Err(DbError::BadUrl { shown: redact(url) })
    }

    /// How errors and listings name it: the path, or the URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres { url } => redact(url),
        }
    }

    /// The URL sqlx connects to.
    pub fn connect_url(&self) -> String {
        match self {
            // Created when missing; the workdir's top keeps it to root.
            Self::Sqlite(path) => format!("sqlite://{}?mode=rwc", path.display()),
            Self::Postgres { url } => url.clone(),
        }
    }
}

/// `url` with the password set (percent-encoded) in its user part.
fn with_password(url: &str, password: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (user, host) = authority.rsplit_once('@').unwrap_or(("", authority));
    let user = user.split(':').next().unwrap_or(user);
    let mut encoded = String::new();
    for byte in password.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{scheme}://{user}:{encoded}@{host}{tail}")
}

/// `url` without its password, in the user part or as a parameter.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a database URL)".to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or(user);
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some(("password", _)) => "password=…".to_owned(),
                    _ => param.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// A PostgreSQL URL to a server off this host gets `sslmode=verify-full` unless it says
/// otherwise: what leaves the host goes over TLS, to a server whose certificate is checked.
fn with_tls_default(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let query = tail.split_once('?').map_or("", |(_, query)| query);
    if query.split('&').any(|param| param.starts_with("sslmode=")) {
        return url.to_owned();
    }
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    };
    let socket = query
        .split('&')
        .any(|param| param.starts_with("host=/") || param.starts_with("host=%2F"));
    let local = host.is_empty()
        || host == "localhost"
        || host.starts_with("127.")
        || host == "::1"
        || socket;
    if local {
        return url.to_owned();
    }
    let joiner = if tail.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}sslmode=verify-full")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_encoded_in_and_never_shown() {
        let url = with_password("postgres://builder@db.example:5433/farm", "p@ss:w/rd");
        assert_eq!(
            url,
            "postgres://builder:p%40ss%3Aw%2Frd@db.example:5433/farm"
        );
        assert_eq!(redact(&url), "postgres://builder@db.example:5433/farm");
        assert_eq!(
            redact("postgres://db.example/farm?user=a&password=secret"),
            "postgres://db.example/farm?user=a&password=…"
        );
    }

    #[test]
    fn servers_off_the_host_get_tls_with_a_checked_certificate() {
        assert_eq!(
            with_tls_default("postgres://a@db.example/farm"),
            "postgres://a@db.example/farm?sslmode=verify-full"
        );
        assert_eq!(
            with_tls_default("postgres://a@db.example/farm?application_name=x"),
            "postgres://a@db.example/farm?application_name=x&sslmode=verify-full"
        );
        for local in [
            "postgres://a@localhost/farm",
            "postgres://a@127.0.0.1:5432/farm",
            "postgres://a@[::1]:5432/farm",
            "postgres://a@localhost/farm?host=/run/postgresql",
            "postgres://a@db.example/farm?sslmode=disable",
        ] {
            assert_eq!(with_tls_default(local), local);
        }
    }

    #[test]
    fn the_environment_wins_then_the_site_config_then_the_workdir() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("db.pass");
        std::fs::write(&password, "s3cret\n").unwrap();
        let section = DatabaseSection {
            url: Some("postgres://builder@localhost/farm".into()),
            password_file: Some(password),
        };
        let from_env =
            Location::resolve(Some("sqlite:///tmp/x.db".into()), &section, Path::new("/w"))
                .unwrap();
        assert_eq!(from_env, Location::Sqlite("/tmp/x.db".into()));
        let from_config = Location::resolve(None, &section, Path::new("/w")).unwrap();
        assert_eq!(
            from_config,
            Location::Postgres {
                url: "postgres://builder:s3cret@localhost/farm".into()
            }
        );
        assert_eq!(
            format!("{from_config:?}"),
            "postgres://builder@localhost/farm"
        );
        let default = Location::resolve(None, &DatabaseSection::default(), Path::new("/w"));
        assert_eq!(
            default.unwrap(),
            Location::Sqlite("/w/autogentoo.db".into())
        );
    }
}
