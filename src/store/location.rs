//! Where the knowledge base is: what `--database` says, read once, so every message about
//! the database can name the place a person gave (a file, or a PostgreSQL host and port)
//! and every command opens it the same way.

use std::path::{Path, PathBuf};

/// The knowledge base's place, as given by `--database` / `SALVE_DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file (`sqlite://PATH`, `sqlite:PATH`, or a plain path).
    SqliteFile {
        path: PathBuf,
        /// What follows `?` in the URL (sqlx options), if anything.
        options: Option<String>,
    },
    /// An SQLite database in memory (tests): it lives as long as its connection.
    SqliteMemory { url: String },
    /// A PostgreSQL server.
    Postgres {
        url: String,
        host: String,
        port: u16,
        database: String,
    },
}

/// `--database` names no database salve can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--database {given}: {why}")]
pub struct BadLocation {
    given: String,
    why: String,
}

impl Location {
    /// Reads `--database`: an `sqlite:` or `postgres:` URL, or a plain file path, which is
    /// SQLite (what a person typing `--database data/x.db` means).
    pub fn parse(given: &str) -> Result<Location, BadLocation> {
        let bad = |why: &str| BadLocation {
            given: shown(given),
            why: why.to_owned(),
        };
        let given = given.trim();
        if given.is_empty() {
            return Err(bad(
                "empty; give a file path, sqlite://PATH or postgres://HOST/DB",
            ));
        }
        if given.starts_with("postgres://") || given.starts_with("postgresql://") {
            let url = reqwest::Url::parse(given).map_err(|e| bad(&format!("not a URL ({e})")))?;
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .unwrap_or("localhost")
                .to_owned();
            let database = url.path().trim_start_matches('/');
            let user = url.username();
            let database = match (database, user) {
                ("", "") => "postgres".to_owned(),
                ("", user) => user.to_owned(),
                (db, _) => db.to_owned(),
            };
            return Ok(Location::Postgres {
                url: given.to_owned(),
                host,
                port: url.port().unwrap_or(5432),
                database,
            });
        }
        let rest = match given
            .strip_prefix("sqlite://")
            .or_else(|| given.strip_prefix("sqlite:"))
        {
            Some(rest) => rest,
            None if given.contains("://") => {
                let scheme = given.split("://").next().unwrap_or_default();
                return Err(bad(&format!(
                    "salve keeps its knowledge base in SQLite or PostgreSQL, not {scheme}; give a file path, sqlite://PATH or postgres://HOST/DB"
                )));
            }
            None => given,
        };
        let (path, options) = match rest.split_once('?') {
            Some((path, options)) => (path, Some(options.to_owned())),
            None => (rest, None),
        };
        if path == ":memory:"
            || options
                .as_deref()
                .is_some_and(|o| o.contains("mode=memory"))
        {
            let url = if given.starts_with("sqlite:") {
                given.to_owned()
            } else {
                format!("sqlite:{given}")
            };
            return Ok(Location::SqliteMemory { url });
        }
        if path.is_empty() {
            return Err(bad("names no file"));
        }
        Ok(Location::SqliteFile {
            path: PathBuf::from(path),
            options,
        })
    }

    /// The place in words, for messages: the file, or the server and database (never
    /// the password).
    pub fn describe(&self) -> String {
        match self {
            Location::SqliteFile { path, .. } => format!("SQLite file {}", path.display()),
            Location::SqliteMemory { .. } => "an in-memory SQLite database".to_owned(),
            Location::Postgres {
                host,
                port,
                database,
                ..
            } => format!("PostgreSQL at {host}:{port} (database {database})"),
        }
    }

    /// The file, when this is an SQLite file.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Location::SqliteFile { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The sqlx URL to connect with; `create` lets SQLite create a missing file (only
    /// `serve` and `migrate` may: a read in the wrong directory must not leave an empty
    /// database behind and report from it).
    pub fn url(&self, create: bool) -> String {
        match self {
            Location::SqliteFile { path, options } => {
                let mode = if create { "mode=rwc" } else { "mode=rw" };
                let options = match options {
                    Some(o) if o.contains("mode=") => o.clone(),
                    Some(o) => format!("{o}&{mode}"),
                    None => mode.to_owned(),
                };
                format!("sqlite://{}?{options}", path.display())
            }
            Location::SqliteMemory { url } if url.contains("mode=") => url.clone(),
            Location::SqliteMemory { url } if url.contains('?') => format!("{url}&mode=rwc"),
            Location::SqliteMemory { url } => format!("{url}?mode=rwc"),
            Location::Postgres { url, .. } => url.clone(),
        }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres { .. })
    }
}

/// A `--database` value fit for a message: a URL's password replaced.
fn shown(given: &str) -> String {
    match reqwest::Url::parse(given) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("****"));
            url.to_string()
        }
        _ => given.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_path_is_an_sqlite_file() {
        let at = Location::parse("data/x.db").unwrap();
        assert_eq!(at.file(), Some(Path::new("data/x.db")));
        assert_eq!(at.url(false), "sqlite://data/x.db?mode=rw");
        assert_eq!(at.url(true), "sqlite://data/x.db?mode=rwc");
        let absolute = Location::parse("/var/lib/salve/salve.db").unwrap();
        assert_eq!(
            absolute.url(true),
            "sqlite:///var/lib/salve/salve.db?mode=rwc"
        );
        assert_eq!(absolute.describe(), "SQLite file /var/lib/salve/salve.db");
    }

    #[test]
    fn sqlite_urls_keep_their_options() {
        let at = Location::parse("sqlite://x.db?cache=shared").unwrap();
        assert_eq!(at.url(true), "sqlite://x.db?cache=shared&mode=rwc");
        assert_eq!(
            Location::parse("sqlite::memory:").unwrap().url(false),
            "sqlite::memory:?mode=rwc"
        );
    }

    #[test]
    fn postgres_names_host_port_and_database_but_no_password() {
        let at = Location::parse("postgres://salve:s3cret@db.internal:5433/kb").unwrap();
        assert_eq!(
            at.describe(),
            "PostgreSQL at db.internal:5433 (database kb)"
        );
        assert_eq!(
            Location::parse("postgresql://u@h").unwrap().describe(),
            "PostgreSQL at h:5432 (database u)"
        );
        let err = Location::parse("mysql://root:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("pw"), "{err}");
        assert!(err.contains("not mysql"), "{err}");
    }
}
