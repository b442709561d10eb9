//! What one instance keeps on its own disk, in `server.data_dir`: which loading (epoch) of
//! each sale's stock it has seen in each store, so that a store that lost its state is
//! told apart from one never loaded even by a freshly started instance; and where the
//! memory store keeps its undelivered orders across a graceful restart.
//!
//! Files are written whole to a temporary name and renamed, so a crash leaves the old
//! file or the new one, never half of one.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::types::{Epoch, Sku};

const EPOCHS_FILE: &str = "epochs.json";
const SNAPSHOT_FILE: &str = "memory-store.json";

/// An instance's local state directory; without one (`data_dir = ""`) nothing is kept.
pub struct LocalState {
    dir: Option<PathBuf>,
    /// Store identity → sku → epoch, as on disk.
    epochs: Mutex<HashMap<String, HashMap<String, Epoch>>>,
}

/// Why local state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct LocalStateError {
    pub path: String,
    pub source: io::Error,
}

impl LocalState {
    /// Keeps nothing (tests, benchmarks, `data_dir = ""`).
    pub fn none() -> Self {
        Self {
            dir: None,
            epochs: Mutex::new(HashMap::new()),
        }
    }

    /// The state kept in `dir` (created when first written); `""` keeps none.
    pub fn open(dir: &str) -> Result<Self, LocalStateError> {
        if dir.is_empty() {
            return Ok(Self::none());
        }
        let dir = PathBuf::from(dir);
        let epochs = read_json(&dir.join(EPOCHS_FILE))?.unwrap_or_default();
        Ok(Self {
            dir: Some(dir),
            epochs: Mutex::new(epochs),
        })
    }

    /// The epoch of `sku`'s stock this instance last saw in store `store`, if any.
    pub fn epoch(&self, store: &str, sku: &Sku) -> Option<Epoch> {
        self.epochs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(store)?
            .get(sku.as_str())
            .cloned()
    }

    /// Remembers `epoch` for `sku` in `store`, on disk before returning.
    pub fn remember(&self, store: &str, sku: &Sku, epoch: &Epoch) -> Result<(), LocalStateError> {
        let mut all = self.epochs.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = all.entry(store.to_owned()).or_default();
        if slot.get(sku.as_str()) == Some(epoch) {
            return Ok(());
        }
        slot.insert(sku.as_str().to_owned(), epoch.clone());
        match &self.dir {
            Some(d) => write_json(&d.join(EPOCHS_FILE), &*all),
            None => Ok(()),
        }
    }

    /// Where the memory store's undelivered orders are kept across a restart.
    pub fn snapshot_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(SNAPSHOT_FILE))
    }
}

/// Reads a JSON file; `None` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, LocalStateError> {
    let err = |source| LocalStateError {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e)),
    }
}

/// Writes a JSON file whole: to a temporary name, synced, then renamed over the old one.
pub fn write_json<T: serde::Serialize + ?Sized>(
    path: &Path,
    value: &T,
) -> Result<(), LocalStateError> {
    let err = |source| LocalStateError {
        path: path.display().to_string(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("flashgate-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.display().to_string();
        let sku = Sku::new("phone");
        let e = Epoch::initial();
        let state = LocalState::open(&d).expect("open");
        assert_eq!(state.epoch("redis://a/fg", &sku), None);
        state.remember("redis://a/fg", &sku, &e).expect("remember");
        let again = LocalState::open(&d).expect("reopen");
        assert_eq!(again.epoch("redis://a/fg", &sku), Some(e));
        assert_eq!(again.epoch("redis://b/fg", &sku), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
