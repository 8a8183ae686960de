//! File-system helpers with the error context and failpoints every durable
//! step needs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Result, StorageError};

/// fsync a file. A failpoint lets tests simulate a device that refuses.
pub(crate) fn sync_file(file: &File, path: &Path) -> Result<()> {
    fail::fail_point!("storage::fsync", |_| Err(StorageError::io(
        path,
        std::io::Error::other("injected fsync failure")
    )));
    file.sync_all().map_err(|e| StorageError::io(path, e))
}

/// fsync a directory so that a rename or a new file in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let file = File::open(dir).map_err(|e| StorageError::io(dir, e))?;
    sync_file(&file, dir)
}

/// Write `bytes` to a new file at `path` and fsync it.
pub(crate) fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| StorageError::io(path, e))?;
    write_all(&mut file, path, bytes)?;
    sync_file(&file, path)
}

pub(crate) fn write_all(file: &mut File, path: &Path, bytes: &[u8]) -> Result<()> {
    fail::fail_point!("storage::write", |_| Err(StorageError::io(
        path,
        std::io::Error::new(std::io::ErrorKind::StorageFull, "injected: no space left on device")
    )));
    file.write_all(bytes).map_err(|e| StorageError::io(path, e))
}

/// Atomically replace `path` with `bytes`: write a temporary file, fsync it,
/// rename it over `path`, fsync the directory.
pub(crate) fn replace_file_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    write_new_file(&tmp, bytes)?;
    fail::fail_point!("storage::before_manifest_rename", |_| Err(StorageError::io(
        &dst,
        std::io::Error::other("injected failure before rename")
    )));
    std::fs::rename(&tmp, &dst).map_err(|e| StorageError::io(&dst, e))?;
    sync_dir(dir)
}

pub(crate) fn remove_file_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}
