//! The `public` schema DataFusion sees: storage tables, persisted views and
//! the session-lifetime external tables DataFusion registers
//! (`CREATE EXTERNAL TABLE`, not persisted).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::view::ViewTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tessera_storage::Store;

use crate::error::{to_df, Error};
use crate::identity::system::{SystemRelation, SystemTable};
use crate::identity::{Identity, EVENTS_TABLE};
use crate::provider::TesseraTable;

/// Storage metadata keys of views start with this.
pub(crate) const VIEW_KEY_PREFIX: &str = "view/";

/// Definitions kept as JSON in the storage metadata under `prefix` (views,
/// segments, traits), by name; `what` names them in errors.
pub(crate) fn stored_definitions<T: serde::de::DeserializeOwned>(
    snap: &tessera_storage::Snapshot,
    prefix: &str,
    what: &str,
) -> crate::Result<BTreeMap<String, T>> {
    let mut out = BTreeMap::new();
    for (key, value) in snap.metadata() {
        if let Some(name) = key.strip_prefix(prefix) {
            let def: T = serde_json::from_str(value)
                .map_err(|e| Error::internal(format!("stored definition of {what} '{name}' does not parse: {e}")))?;
            out.insert(name.to_string(), def);
        }
    }
    Ok(out)
}

/// A view as persisted: its `CREATE VIEW` text and the relations it names.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ViewDef {
    pub sql: String,
    pub depends_on: BTreeSet<String>,
}

/// A view and its plan (or why it cannot be planned now).
#[derive(Clone)]
pub(crate) struct PlannedView {
    pub def: ViewDef,
    pub plan: Result<Arc<ViewTable>, String>,
}

pub(crate) struct TesseraSchema {
    store: Store,
    identity: Arc<Identity>,
    profiles: Arc<crate::profiles::Profiles>,
    views: RwLock<BTreeMap<String, PlannedView>>,
    external: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
}

impl std::fmt::Debug for TesseraSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TesseraSchema").finish()
    }
}

impl TesseraSchema {
    pub(crate) fn new(store: Store, identity: Arc<Identity>, profiles: Arc<crate::profiles::Profiles>) -> Self {
        TesseraSchema { store, identity, profiles, views: RwLock::new(BTreeMap::new()), external: RwLock::new(HashMap::new()) }
    }

    /// Identity system relations exist once an identifier type does.
    fn has_identity(&self) -> bool {
        self.store.snapshot().table(EVENTS_TABLE).is_some()
    }

    /// Views persisted in storage, by name.
    pub(crate) fn stored_views(&self) -> crate::Result<BTreeMap<String, ViewDef>> {
        stored_definitions(&self.store.snapshot(), VIEW_KEY_PREFIX, "view")
    }

    pub(crate) fn set_planned_views(&self, views: BTreeMap<String, PlannedView>) {
        *self.views.write() = views;
    }

    pub(crate) fn is_view(&self, name: &str) -> bool {
        self.views.read().contains_key(name)
    }

    pub(crate) fn is_table(&self, name: &str) -> bool {
        self.store.snapshot().table(name).is_some()
    }

    /// Views that name `relation` directly.
    pub(crate) fn dependents_of(&self, relation: &str) -> Vec<String> {
        self.views
            .read()
            .iter()
            .filter(|(_, v)| v.def.depends_on.contains(relation))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// True when `from` reaches `to` through view dependencies.
    pub(crate) fn reaches(&self, from: &BTreeSet<String>, to: &str) -> bool {
        let views = self.views.read();
        let mut stack: Vec<String> = from.iter().cloned().collect();
        let mut seen = BTreeSet::new();
        while let Some(name) = stack.pop() {
            if name == to {
                return true;
            }
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(v) = views.get(&name) {
                stack.extend(v.def.depends_on.iter().cloned());
            }
        }
        false
    }
}

#[async_trait]
impl SchemaProvider for TesseraSchema {
    fn table_names(&self) -> Vec<String> {
        let snap = self.store.snapshot();
        let mut names: Vec<String> = snap.tables().map(|t| t.name().to_string()).filter(|n| n != EVENTS_TABLE).collect();
        if self.has_identity() {
            names.extend(SystemRelation::NAMES.iter().map(|n| n.to_string()));
            names.extend(crate::profiles::RELATIONS.iter().map(|n| n.to_string()));
        }
        names.extend(self.views.read().keys().cloned());
        names.extend(self.external.read().keys().cloned());
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if name == EVENTS_TABLE {
            return Ok(None);
        }
        if let Some(t) = self.store.snapshot().table(name) {
            return Ok(Some(Arc::new(TesseraTable::new(self.store.clone(), t.meta.clone(), self.identity.clone()))));
        }
        if let Some(relation) = SystemRelation::named(name).filter(|_| self.has_identity()) {
            let table = SystemTable::new(self.store.clone(), self.identity.state().clone(), Some(self.profiles.clone()), relation, None).map_err(to_df)?;
            return Ok(Some(Arc::new(table)));
        }
        if let Some(batch) = crate::profiles::relation(&self.profiles, name).map_err(to_df)? {
            let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
            return Ok(Some(Arc::new(table)));
        }
        if let Some(v) = self.views.read().get(name) {
            return match &v.plan {
                Ok(table) => Ok(Some(table.clone() as Arc<dyn TableProvider>)),
                Err(why) => Err(to_df(Error::user(format!("view '{name}' cannot be used: {why}")))),
            };
        }
        Ok(self.external.read().get(name).cloned())
    }

    fn register_table(&self, name: String, table: Arc<dyn TableProvider>) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if self.table_exist(&name) {
            return Err(DataFusionError::Plan(format!("relation '{name}' already exists")));
        }
        Ok(self.external.write().insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.external.write().remove(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        (self.is_table(name) && name != EVENTS_TABLE)
            || (SystemRelation::named(name).is_some() && self.has_identity())
            || self.is_view(name)
            || crate::profiles::RELATIONS.contains(&name)
            || self.external.read().contains_key(name)
    }
}
