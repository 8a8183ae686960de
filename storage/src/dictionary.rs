//! The identity dictionary file: the engine's identifier dictionary (node
//! id -> identifier type and 128-bit key), saved at checkpoints so that
//! opening a database does not have to normalize every identifier value
//! again. It is a cache of what the rows already say: a missing file means
//! a slower open, never lost data; a damaged one is reported.
//!
//! Layout (little-endian): magic `TSIDDICT` (8 bytes), entry count (u64),
//! CRC-32 of the entries (u32), then per node id from 0: type (u16,
//! `0xFFFF` for an unused id) and key (two u64). Replaced atomically
//! (temporary file, fsync, rename, directory fsync).

use std::path::Path;

use crate::error::{Result, StorageError};
use crate::io;

pub const DICTIONARY_FILE: &str = "identity.dict";
const MAGIC: &[u8; 8] = b"TSIDDICT";
const HEADER_LEN: usize = 8 + 8 + 4;
const ENTRY_LEN: usize = 2 + 16;
/// Most entries a dictionary file may hold (node ids are 32-bit).
const MAX_ENTRIES: u64 = u32::MAX as u64;

/// One node: its identifier type and key.
pub type DictionaryEntry = (u16, [u64; 2]);

pub(crate) fn encode(entries: &[DictionaryEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for (t, key) in entries {
        body.extend_from_slice(&t.to_le_bytes());
        body.extend_from_slice(&key[0].to_le_bytes());
        body.extend_from_slice(&key[1].to_le_bytes());
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Vec<DictionaryEntry>> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(StorageError::corruption(path, 0, "not a Tessera identity dictionary (bad magic or too short)"));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[8..16]);
    let count = u64::from_le_bytes(n);
    let body = &bytes[HEADER_LEN..];
    if count > MAX_ENTRIES || count.checked_mul(ENTRY_LEN as u64) != Some(body.len() as u64) {
        return Err(StorageError::corruption(path, 8, format!("entry count {count} does not match the file size")));
    }
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if crc32fast::hash(body) != crc {
        return Err(StorageError::corruption(path, HEADER_LEN as u64, "checksum mismatch in the identity dictionary"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for chunk in body.chunks_exact(ENTRY_LEN) {
        let t = u16::from_le_bytes([chunk[0], chunk[1]]);
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&chunk[2..10]);
        b.copy_from_slice(&chunk[10..18]);
        out.push((t, [u64::from_le_bytes(a), u64::from_le_bytes(b)]));
    }
    Ok(out)
}

pub(crate) fn write(dir: &Path, entries: &[DictionaryEntry]) -> Result<()> {
    io::replace_file_atomically(dir, DICTIONARY_FILE, &encode(entries))
}

pub(crate) fn read(dir: &Path) -> Result<Option<Vec<DictionaryEntry>>> {
    let path = dir.join(DICTIONARY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(&path, e)),
    };
    decode(&bytes, &path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let entries = vec![(1u16, [1u64, 2]), (u16::MAX, [0, 0]), (3, [u64::MAX, 7])];
        let path = Path::new("identity.dict");
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes, path).expect("decodes"), entries);
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 5] ^= 1;
        assert!(decode(&bad, path).expect_err("damaged").to_string().contains("checksum"));
        assert!(decode(&bytes[..bytes.len() - 1], path).is_err());
    }
}
