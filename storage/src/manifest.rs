//! The manifest: the catalog (tables, their columns and options, the
//! engine's metadata) and the list of live segments, as of the last flush.
//!
//! On disk: `MANIFEST` = magic `TESMAN01`, payload length (u64 LE),
//! CRC32 of the payload (u32 LE), payload (JSON). It is only ever replaced
//! whole, atomically (see `io::replace_file_atomically`).

use std::collections::BTreeMap;
use std::path::Path;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use base64::Engine as _;
use roaring::RoaringTreemap;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};
use crate::io;
use crate::{Lsn, RowId, TableId, ROW_ID_COLUMN};

pub(crate) const MANIFEST_FILE: &str = "MANIFEST";
const MAGIC: &[u8; 8] = b"TESMAN01";
const HEADER_LEN: usize = 8 + 8 + 4;
/// The manifest is read whole into memory; refuse absurd sizes rather than
/// allocating whatever a damaged length field says.
const MAX_MANIFEST_BYTES: u64 = 1 << 30;
/// The format this build writes. Version 2 added integer pages stored
/// narrower than their column, version 3 packed integer pages
/// (storage/FORMAT.md): an older build refuses a newer database by this
/// number instead of reporting its pages as damaged.
pub(crate) const FORMAT_VERSION: u32 = 3;
/// The oldest format this build reads (it writes `FORMAT_VERSION` from its
/// first manifest on).
pub(crate) const OLDEST_READABLE_FORMAT_VERSION: u32 = 1;

/// One column of a table as storage knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
    /// Hidden columns are kept like any other but not shown to SQL users
    /// (the engine stores per-row internal data in them).
    #[serde(default)]
    pub hidden: bool,
}

impl ColumnDef {
    pub fn new(name: impl Into<String>, data_type: DataType, nullable: bool) -> Self {
        ColumnDef {
            name: name.into(),
            data_type,
            nullable,
            hidden: false,
        }
    }
}

/// A table's definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMeta {
    pub id: TableId,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Options given at creation (`WITH (...)`), kept verbatim for the
    /// features that read them.
    pub options: BTreeMap<String, String>,
}

impl TableMeta {
    /// The schema of the batches storage keeps: `_row_id` first, then every
    /// column, hidden ones included.
    pub fn storage_schema(&self) -> SchemaRef {
        let mut fields = Vec::with_capacity(self.columns.len() + 1);
        fields.push(Field::new(ROW_ID_COLUMN, DataType::UInt64, false));
        for c in &self.columns {
            fields.push(Field::new(&c.name, c.data_type.clone(), c.nullable));
        }
        std::sync::Arc::new(Schema::new(fields))
    }

    /// The schema callers append: every column, hidden ones included, no
    /// row id.
    pub fn append_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable))
            .collect();
        std::sync::Arc::new(Schema::new(fields))
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// A live segment, as named by the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentRef {
    pub id: u64,
    pub rows: u64,
    pub min_row_id: RowId,
    pub max_row_id: RowId,
    pub bytes: u64,
}

impl SegmentRef {
    pub(crate) fn file_name(&self) -> String {
        segment_file_name(self.id)
    }
}

pub(crate) fn segment_file_name(id: u64) -> String {
    format!("seg-{id:016}.tseg")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TableEntry {
    pub meta: TableMeta,
    /// Next row id to hand out, as of `flushed_lsn` (log replay advances it).
    pub next_row_id: RowId,
    pub segments: Vec<SegmentRef>,
    /// Row ids deleted from flushed segments but still in their bytes,
    /// as a serialized roaring treemap in base64.
    #[serde(default)]
    pub deleted: String,
}

impl TableEntry {
    pub(crate) fn deleted_bitmap(&self) -> std::result::Result<RoaringTreemap, String> {
        if self.deleted.is_empty() {
            return Ok(RoaringTreemap::new());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.deleted)
            .map_err(|e| format!("deleted row set of table {}: {e}", self.meta.name))?;
        RoaringTreemap::deserialize_from(&bytes[..])
            .map_err(|e| format!("deleted row set of table {}: {e}", self.meta.name))
    }

    pub(crate) fn set_deleted(&mut self, bitmap: &RoaringTreemap) -> Result<()> {
        if bitmap.is_empty() {
            self.deleted.clear();
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(bitmap.serialized_size());
        bitmap
            .serialize_into(&mut bytes)
            .map_err(|e| StorageError::Internal(format!("serializing a bitmap: {e}")))?;
        self.deleted = base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format_version: u32,
    /// Every log record with an LSN at or below this is reflected in the
    /// segments named here; replay starts after it.
    pub flushed_lsn: Lsn,
    pub next_table_id: TableId,
    pub next_segment_id: u64,
    pub tables: BTreeMap<TableId, TableEntry>,
    /// Opaque key/value pairs owned by the engine (views, for example).
    pub metadata: BTreeMap<String, String>,
}

impl Manifest {
    pub(crate) fn empty() -> Self {
        Manifest {
            format_version: FORMAT_VERSION,
            flushed_lsn: 0,
            next_table_id: 1,
            next_segment_id: 1,
            tables: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let payload = serde_json::to_vec(self)
            .map_err(|e| StorageError::Internal(format!("serializing the manifest: {e}")))?;
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        Ok(out)
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let bytes = self.encode()?;
        io::replace_file_atomically(dir, MANIFEST_FILE, &bytes)
    }

    /// Read the manifest; `Ok(None)` when the directory has none yet.
    pub(crate) fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io(&path, e)),
        };
        Self::decode(&bytes, &path).map(Some)
    }

    fn decode(bytes: &[u8], path: &Path) -> Result<Manifest> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(StorageError::corruption(path, 0, "not a Tessera manifest (bad magic or too short)"));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&bytes[8..16]);
        let len = u64::from_le_bytes(len_bytes);
        if len > MAX_MANIFEST_BYTES || len != (bytes.len() - HEADER_LEN) as u64 {
            return Err(StorageError::corruption(
                path,
                8,
                format!("manifest length field says {len} bytes, file holds {}", bytes.len() - HEADER_LEN),
            ));
        }
        let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let payload = &bytes[HEADER_LEN..];
        if crc32fast::hash(payload) != crc {
            return Err(StorageError::corruption(path, HEADER_LEN as u64, "manifest checksum mismatch"));
        }
        let manifest: Manifest = serde_json::from_slice(payload).map_err(|e| {
            StorageError::corruption(path, HEADER_LEN as u64, format!("manifest does not parse: {e}"))
        })?;
        if !(OLDEST_READABLE_FORMAT_VERSION..=FORMAT_VERSION).contains(&manifest.format_version) {
            return Err(StorageError::InvalidArgument(format!(
                "{} has format version {}, this build reads versions {OLDEST_READABLE_FORMAT_VERSION} to {FORMAT_VERSION}",
                path.display(),
                manifest.format_version
            )));
        }
        // Whatever this build writes from here on is in its own format, so
        // the next manifest says so (a version-1 build must then refuse
        // the database, which may hold pages of this version).
        let mut manifest = manifest;
        manifest.format_version = FORMAT_VERSION;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_version(version: u32) -> Vec<u8> {
        let mut m = Manifest::empty();
        m.format_version = version;
        m.encode().expect("encode")
    }

    /// Older databases open and are written in this build's format from
    /// then on; newer ones are refused by their version, not read as
    /// damaged.
    #[test]
    fn older_formats_are_read_and_upgraded_newer_ones_refused() {
        let path = Path::new("MANIFEST");
        for version in OLDEST_READABLE_FORMAT_VERSION..=FORMAT_VERSION {
            let read = Manifest::decode(&with_version(version), path).expect("readable version");
            assert_eq!(read.format_version, FORMAT_VERSION, "written back as version {FORMAT_VERSION}");
        }
        for version in [0, FORMAT_VERSION + 1] {
            let e = Manifest::decode(&with_version(version), path).expect_err("unreadable version");
            assert!(matches!(e, StorageError::InvalidArgument(_)), "{e:?}");
            assert!(e.to_string().contains(&format!("format version {version}")), "{e}");
        }
    }
}
