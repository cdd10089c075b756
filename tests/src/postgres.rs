//! Databases for tests: a SQLite file in a temp dir, or a fresh PostgreSQL database — on the
//! server named by `DATABASE_URL` when set, otherwise on a throwaway cluster started with
//! `initdb`/`pg_ctl` (as the `postgres` user when running as root) and stopped on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use tempfile::TempDir;

use crate::free_port;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// A database for one test; cleaned up on drop.
pub struct TestDatabase {
    pub url: String,
    // Declared before the directory: the cluster stops before its files are removed.
    _cluster: Option<Cluster>,
    _dir: TempDir,
}

impl TestDatabase {
    pub async fn new(kind: DbKind) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("eq-db-")
            .tempdir()
            .expect("temp dir");
        match kind {
            DbKind::Sqlite => Self {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("history.db").display()
                ),
                _cluster: None,
                _dir: dir,
            },
            DbKind::Postgres => {
                let (server_url, cluster) = match std::env::var("DATABASE_URL") {
                    Ok(url) if url.starts_with("postgres") => (url, None),
                    _ => {
                        let cluster = Cluster::start(&dir);
                        (cluster.url("postgres"), Some(cluster))
                    }
                };
                let name = format!("eq_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(server_url.as_str())
                    .await
                    .expect("connecting to PostgreSQL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("creating the test database");
                admin.close().await.ok();
                Self {
                    url: replace_database(&server_url, &name),
                    _cluster: cluster,
                    _dir: dir,
                }
            }
        }
    }
}

/// Replaces the database name in a `postgres://…/<db>?…` URL.
fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host = match path_start {
        Some(i) => &base[..i],
        None => base,
    };
    format!("{host}/{name}{query}")
}

/// A throwaway PostgreSQL cluster.
struct Cluster {
    data: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

fn pg_bin(name: &str) -> PathBuf {
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        versions.sort();
        if let Some(latest) = versions.last() {
            let candidate = latest.join("bin").join(name);
            if candidate.exists() {
                return candidate;
            }
        }
    }
    PathBuf::from(name)
}

impl Cluster {
    fn start(dir: &TempDir) -> Self {
        let data = dir.path().join("pg");
        std::fs::create_dir_all(&data).expect("pg dir");
        // initdb refuses to run as root: run the server binaries as `postgres`.
        let as_postgres_user = is_root();
        if as_postgres_user {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(dir.path()));
            run(Command::new("chmod").arg("755").arg(dir.path()));
        }
        let port = free_port();
        let cluster = Self {
            data,
            port,
            as_postgres_user,
        };
        cluster.pg(&format!(
            "{} -D {} -A trust -U postgres -E UTF8 --no-sync",
            pg_bin("initdb").display(),
            cluster.data.display()
        ));
        cluster.pg(&format!(
            "{} -D {} -o \"-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off\" -l {}/log -w start",
            pg_bin("pg_ctl").display(),
            cluster.data.display(),
            port,
            cluster.data.display(),
            cluster.data.display()
        ));
        cluster
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn pg(&self, command: &str) {
        if self.as_postgres_user {
            run(Command::new("su")
                .arg("postgres")
                .arg("-s")
                .arg("/bin/sh")
                .arg("-c")
                .arg(command));
        } else {
            run(Command::new("sh").arg("-c").arg(command));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let cmd = format!(
            "{} -D {} -m immediate stop",
            pg_bin("pg_ctl").display(),
            self.data.display()
        );
        if self.as_postgres_user {
            let _ = Command::new("su")
                .args(["postgres", "-s", "/bin/sh", "-c", &cmd])
                .output();
        } else {
            let _ = Command::new("sh").args(["-c", &cmd]).output();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(command: &mut Command) {
    let output = command.output().expect("running a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            super::replace_database("postgres://u@127.0.0.1:5432/test?sslmode=disable", "x"),
            "postgres://u@127.0.0.1:5432/x?sslmode=disable"
        );
        assert_eq!(
            super::replace_database("postgres://127.0.0.1:5432", "x"),
            "postgres://127.0.0.1:5432/x"
        );
    }
}
