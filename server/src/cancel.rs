//! Cancel requests. A client that wants its running statement stopped opens
//! a second connection and sends the process id and secret key it got at
//! startup (BackendKeyData); the statement stops with SQLSTATE 57014.
//!
//! pgwire has a registry of its own, but its query loop takes the
//! replacement of a statement's cancel signal for a cancel, and it stops any
//! statement by dropping its future, also a write whose commit then goes on
//! in the background while the client hears "canceled". Tessera decides per
//! statement what may be stopped (`handler::Interrupt`), so it keeps its own
//! registry and never hands pgwire's one a connection.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::channel::oneshot;
use parking_lot::Mutex;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;

/// The connections that can be cancelled, by (process id, secret key).
#[derive(Default)]
pub struct Cancels {
    slots: Mutex<HashMap<(i32, Bytes), Arc<CancelSlot>>>,
}

/// One connection's signal: armed for each statement it runs.
#[derive(Default)]
pub struct CancelSlot {
    sender: Mutex<Option<oneshot::Sender<()>>>,
}

impl CancelSlot {
    /// A fresh signal for the statement about to run; the previous
    /// statement's receiver sees its sender dropped (not a cancel).
    pub fn arm(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        *self.sender.lock() = Some(tx);
        rx
    }

    fn fire(&self) {
        if let Some(tx) = self.sender.lock().take() {
            let _ = tx.send(());
        }
    }
}

/// Kept in the connection's session extensions; leaving the registry when
/// the connection ends.
pub struct Registration {
    cancels: Arc<Cancels>,
    key: (i32, Bytes),
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.cancels.slots.lock().remove(&self.key);
    }
}

impl Cancels {
    pub fn register(self: &Arc<Self>, pid: i32, secret: &SecretKey) -> Registration {
        let key = (pid, secret.to_bytes());
        let slot = Arc::new(CancelSlot::default());
        self.slots.lock().insert(key.clone(), slot.clone());
        Registration { cancels: self.clone(), key, slot }
    }
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        // An unknown or wrong key is ignored without a word, as PostgreSQL
        // does: the requester learns nothing about other connections.
        let slot = self.slots.lock().get(&(request.pid, request.secret_key.to_bytes())).cloned();
        if let Some(slot) = slot {
            slot.fire();
        }
    }
}
