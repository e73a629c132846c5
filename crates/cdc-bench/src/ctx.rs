//! What every case needs: the database, the binaries, the scratch space.

use std::path::PathBuf;
use std::time::Duration;

use crate::db::Db;

/// Settings and handles shared by the cases.
pub struct Ctx {
    /// The bench database.
    pub db: Db,
    /// Its URL (TCP, password authentication).
    pub url: String,
    /// The release `cdc-engine` binary.
    pub engine: PathBuf,
    /// This binary (for the library worker).
    pub me: PathBuf,
    /// Directory of the PostgreSQL client binaries (`pg_recvlogical`, `psql`).
    pub pg_bin: PathBuf,
    /// Scratch directory for configs, logs and sink files.
    pub work: PathBuf,
    /// The tansu broker binary, when the Kafka cases run.
    pub tansu: Option<PathBuf>,
    /// Port for the broker.
    pub kafka_port: u16,
    /// The NATS server (JetStream), when the NATS case runs.
    pub nats: Option<Server>,
    /// The Elasticsearch-API server, when the Elasticsearch case runs.
    pub es: Option<Server>,
    /// Repetitions of each measurement.
    pub reps: usize,
    /// Longest a single run may take.
    pub timeout: Duration,
}

impl Ctx {
    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

/// A sink's server, started by scripts/bench.sh.
pub struct Server {
    /// Its URL.
    pub url: String,
    /// Its process, for its CPU seconds.
    pub pid: Option<u32>,
    /// What to call it in the report (e.g. `Elasticsearch API (noida-db)`).
    pub label: String,
}
