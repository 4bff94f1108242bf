//! The sandbox database: one redb file (`<state>/sandboxes.redb`) mapping a
//! sandbox id to its [`SandboxRecord`] as JSON.
//!
//! redb holds an exclusive lock on the file, so a second daemon on the same
//! state directory fails to open it instead of fighting over the VMs. Every
//! write is its own durable transaction; records are small and writes
//! rare (state changes), so nothing is batched.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use super::record::SandboxRecord;

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");

/// Errors of the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// redb failed (or another process holds the database).
    #[error("sandbox database: {0}")]
    Redb(Box<redb::Error>),
    /// A record could not be encoded.
    #[error("sandbox record {id}: {source}")]
    Encode {
        /// Sandbox id.
        id: String,
        /// The encoder's complaint.
        source: serde_json::Error,
    },
}

fn redb_err(e: impl Into<redb::Error>) -> DbError {
    DbError::Redb(Box::new(e.into()))
}

/// The open database.
#[derive(Debug)]
pub struct Db {
    db: Database,
}

impl Db {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let db = Database::create(path).map_err(redb_err)?;
        let txn = db.begin_write().map_err(redb_err)?;
        txn.open_table(SANDBOXES).map_err(redb_err)?;
        txn.commit().map_err(redb_err)?;
        Ok(Db { db })
    }

    /// Writes (inserting or replacing) a record.
    pub fn put(&self, record: &SandboxRecord) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(record).map_err(|source| DbError::Encode {
            id: record.id.clone(),
            source,
        })?;
        let txn = self.db.begin_write().map_err(redb_err)?;
        {
            let mut t = txn.open_table(SANDBOXES).map_err(redb_err)?;
            t.insert(record.id.as_str(), bytes.as_slice())
                .map_err(redb_err)?;
        }
        txn.commit().map_err(redb_err)
    }

    /// Removes a record (no error if it is not there).
    pub fn remove(&self, id: &str) -> Result<(), DbError> {
        let txn = self.db.begin_write().map_err(redb_err)?;
        {
            let mut t = txn.open_table(SANDBOXES).map_err(redb_err)?;
            t.remove(id).map_err(redb_err)?;
        }
        txn.commit().map_err(redb_err)
    }

    /// Every record. One that does not decode (written by a newer, different
    /// daemon) is skipped with a warning rather than failing start-up.
    pub fn all(&self) -> Result<Vec<SandboxRecord>, DbError> {
        let txn = self.db.begin_read().map_err(redb_err)?;
        let t = txn.open_table(SANDBOXES).map_err(redb_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(redb_err)? {
            let (k, v) = entry.map_err(redb_err)?;
            match serde_json::from_slice::<SandboxRecord>(v.value()) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(id = k.value(), "skipping unreadable sandbox record: {e}"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::record::{now_rfc3339, SandboxState};
    use crate::sandbox::spec::SandboxSpec;

    fn record(id: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            state: SandboxState::Running,
            reason: None,
            spec: SandboxSpec::new("busybox"),
            image_digest: "sha256:00".into(),
            process: crate::sandbox::spec::resolve_process(
                &crate::image::DefaultProcess {
                    cmd: vec!["sh".into()],
                    ..Default::default()
                },
                &SandboxSpec::new("busybox"),
            )
            .unwrap_or_else(|e| panic!("{e}")),
            created_at: now_rfc3339(),
            started_at: None,
            finished_at: None,
            deadline_unix: None,
            exit: None,
            vmm: None,
            network: None,
        }
    }

    #[test]
    fn records_survive_reopening() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        {
            let db = Db::open(&path)?;
            db.put(&record("a"))?;
            db.put(&record("b"))?;
            db.remove("a")?;
            db.remove("missing")?;
        }
        let db = Db::open(&path)?;
        let all = db.all()?;
        assert_eq!(all, vec![record_with_time("b", &all[0].created_at)]);
        Ok(())
    }

    fn record_with_time(id: &str, t: &str) -> SandboxRecord {
        let mut r = record(id);
        r.created_at = t.into();
        r
    }

    #[test]
    fn a_second_opener_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        let _first = Db::open(&path)?;
        assert!(Db::open(&path).is_err());
        Ok(())
    }
}
