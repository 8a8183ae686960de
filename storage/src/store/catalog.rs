//! Catalog changes: tables, columns, engine metadata and the identity
//! dictionary file. Each is one durable manifest (or file) replacement.

use super::*;

impl Store {
    /// Create a table. Its columns must have unique, non-empty names.
    pub fn create_table(&self, name: &str, columns: Vec<ColumnDef>, options: BTreeMap<String, String>) -> Result<TableId> {
        validate_table(name, &columns, &options)?;
        self.check_poisoned()?;
        let mut w = self.inner.writer.lock();
        if w.latest.table(name).is_some() {
            return Err(StorageError::AlreadyExists { kind: "table", name: name.to_string() });
        }
        self.drain(&w)?;
        let mut manifest = w.manifest.clone();
        let id = manifest.next_table_id;
        manifest.next_table_id += 1;
        let meta = TableMeta { id, name: name.to_string(), columns, options };
        manifest.tables.insert(id, TableEntry { meta: meta.clone(), next_row_id: 0, segments: Vec::new(), deleted: String::new() });
        self.write_manifest(&manifest)?;
        w.manifest = manifest;
        let mut snap = (*w.latest).clone();
        snap.tables.insert(id, Arc::new(TableSnapshot::new(meta, 0)));
        self.install(&mut w, snap);
        Ok(id)
    }

    /// Drop a table; its segment files are removed.
    pub fn drop_table(&self, name: &str) -> Result<()> {
        self.check_poisoned()?;
        let mut w = self.inner.writer.lock();
        let table = w
            .latest
            .table(name)
            .cloned()
            .ok_or_else(|| StorageError::NotFound { kind: "table", name: name.to_string() })?;
        self.drain(&w)?;
        let mut manifest = w.manifest.clone();
        let removed = manifest.tables.remove(&table.id());
        self.write_manifest(&manifest)?;
        w.manifest = manifest;
        let mut snap = (*w.latest).clone();
        snap.tables.remove(&table.id());
        self.install(&mut w, snap);
        if let (Some(dir), Some(entry)) = (&self.inner.dir, removed) {
            for s in &entry.segments {
                io::remove_file_if_exists(&dir.join(s.file_name()))?;
            }
        }
        Ok(())
    }

    /// Add a nullable column to a table. Rows written before read it as
    /// NULL.
    pub fn add_column(&self, table: &str, column: ColumnDef) -> Result<()> {
        self.alter_table(table, vec![column], None)
    }

    /// Add nullable columns to a table and optionally replace its options,
    /// in one durable catalog change.
    pub fn alter_table(&self, table: &str, add: Vec<ColumnDef>, options: Option<BTreeMap<String, String>>) -> Result<()> {
        if let Some(c) = add.iter().find(|c| !c.nullable) {
            return Err(StorageError::InvalidArgument(format!(
                "column '{}' added to an existing table must be nullable", c.name
            )));
        }
        self.check_poisoned()?;
        let mut w = self.inner.writer.lock();
        let t = w
            .latest
            .table(table)
            .cloned()
            .ok_or_else(|| StorageError::NotFound { kind: "table", name: table.to_string() })?;
        let mut columns = t.meta.columns.clone();
        columns.extend(add);
        let options = options.unwrap_or_else(|| t.meta.options.clone());
        validate_table(table, &columns, &options)?;
        self.drain(&w)?;
        let mut manifest = w.manifest.clone();
        let entry = manifest
            .tables
            .get_mut(&t.id())
            .ok_or_else(|| StorageError::Internal(format!("table {table} missing from the manifest")))?;
        entry.meta.columns = columns.clone();
        entry.meta.options = options.clone();
        self.write_manifest(&manifest)?;
        w.manifest = manifest;
        let mut snap = (*w.latest).clone();
        let mut ts = (*t).clone();
        let mut meta = (*ts.meta).clone();
        meta.columns = columns;
        meta.options = options;
        ts.meta = Arc::new(meta);
        snap.tables.insert(ts.id(), Arc::new(ts));
        self.install(&mut w, snap);
        Ok(())
    }

    /// Save the identity dictionary (atomically; a no-op in memory).
    pub fn write_identity_dictionary(&self, entries: &[crate::DictionaryEntry]) -> Result<()> {
        match &self.inner.dir {
            Some(dir) => crate::dictionary::write(dir, entries),
            None => Ok(()),
        }
    }

    /// The saved identity dictionary, if there is one; a damaged file is
    /// reported as corruption.
    pub fn read_identity_dictionary(&self) -> Result<Option<Vec<crate::DictionaryEntry>>> {
        match &self.inner.dir {
            Some(dir) => crate::dictionary::read(dir),
            None => Ok(None),
        }
    }

    /// Set (or with `None`, remove) an engine metadata entry, durably.
    pub fn set_metadata(&self, key: &str, value: Option<String>) -> Result<()> {
        if value.as_ref().is_some_and(|v| v.len() > MAX_OPTION_BYTES * 16) {
            return Err(StorageError::LimitExceeded(format!("metadata value for '{key}' is larger than 1 MiB")));
        }
        self.check_poisoned()?;
        let mut w = self.inner.writer.lock();
        self.drain(&w)?;
        let mut manifest = w.manifest.clone();
        match &value {
            Some(v) => manifest.metadata.insert(key.to_string(), v.clone()),
            None => manifest.metadata.remove(key),
        };
        self.write_manifest(&manifest)?;
        let mut snap = (*w.latest).clone();
        snap.metadata = Arc::new(manifest.metadata.clone());
        w.manifest = manifest;
        self.install(&mut w, snap);
        Ok(())
    }
}
