//! The sessions the server holds, by id, each with its tenant. A lookup by another tenant finds
//! nothing, exactly as for an id that never existed. Sessions the engine closed on its own (idle
//! timeout, lifetime) are swept, which gives their quota places back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vana_sandbox_core::Session;

use crate::quota::SessionGuard;
use crate::tenants::Tenant;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Entry {
    tenant: Arc<Tenant>,
    session: Session,
    _quota: SessionGuard,
}

/// Open sessions by id.
#[derive(Default)]
pub(crate) struct Registry {
    open: Mutex<HashMap<String, Entry>>,
}

impl Registry {
    /// Holds `session` for `tenant` (its quota place goes with it).
    pub(crate) fn insert(&self, tenant: Arc<Tenant>, session: Session, quota: SessionGuard) {
        lock(&self.open).insert(
            session.id().to_string(),
            Entry {
                tenant,
                session,
                _quota: quota,
            },
        );
    }

    /// `tenant`'s open session `id`.
    pub(crate) fn get(&self, tenant: &Arc<Tenant>, id: &str) -> Option<Session> {
        let mut open = lock(&self.open);
        let e = open.get(id)?;
        if !Arc::ptr_eq(&e.tenant, tenant) {
            return None;
        }
        if e.session.is_closed() {
            open.remove(id);
            return None;
        }
        Some(e.session.clone())
    }

    /// Takes `tenant`'s session `id` out (to close it).
    pub(crate) fn remove(&self, tenant: &Arc<Tenant>, id: &str) -> Option<Session> {
        let mut open = lock(&self.open);
        if !open.get(id).is_some_and(|e| Arc::ptr_eq(&e.tenant, tenant)) {
            return None;
        }
        open.remove(id).map(|e| e.session)
    }

    /// The ids of `tenant`'s open sessions.
    pub(crate) fn ids(&self, tenant: &Arc<Tenant>) -> Vec<String> {
        let open = lock(&self.open);
        let mut ids: Vec<String> = open
            .iter()
            .filter(|(_, e)| Arc::ptr_eq(&e.tenant, tenant) && !e.session.is_closed())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Forgets sessions the engine closed on its own.
    pub(crate) fn sweep(&self) {
        lock(&self.open).retain(|_, e| !e.session.is_closed());
    }

    /// Takes every session out (to close them at shutdown).
    pub(crate) fn drain(&self) -> Vec<Session> {
        lock(&self.open).drain().map(|(_, e)| e.session).collect()
    }

    /// Sessions held.
    pub(crate) fn len(&self) -> usize {
        lock(&self.open).len()
    }
}
