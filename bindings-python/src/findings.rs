//! Findings to a Python callable. The detector's thread must never wait for the GIL (a Python
//! program that holds it would stall detection), so its sink only offers the finding, as JSON,
//! to a bounded queue; a thread of ours takes the GIL for each call. A full queue (a callback
//! slower than the findings) drops and counts; a callback that raises is reported the way Python
//! reports errors it cannot raise anywhere (`sys.unraisablehook`), and the thread goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use vana_sandbox::monitor::threat::FindingSink;
use vana_sandbox::Finding;

/// Findings waiting for the callback before new ones are dropped.
const QUEUE: usize = 1024;

enum Delivery {
    /// A finding as JSON.
    Finding(String),
    /// Answer once everything before has been delivered.
    Flush(SyncSender<()>),
}

/// The detector's side: offers findings to the queue, never waits.
struct Offer {
    tx: SyncSender<Delivery>,
    dropped: Arc<AtomicU64>,
}

impl FindingSink for Offer {
    fn on_finding(&self, finding: &Finding) {
        let json = match serde_json::to_string(finding) {
            Ok(j) => j,
            Err(_) => return,
        };
        match self.tx.try_send(Delivery::Finding(json)) {
            Ok(()) => {}
            // A callback slower than the findings: counted (`findings_dropped`).
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The engine was closed: nobody listens any more.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The queue and the thread that calls the Python callable.
pub(crate) struct FindingBridge {
    /// Our own sender: for flushes; dropped by `close` so that the thread can end.
    tx: Mutex<Option<SyncSender<Delivery>>>,
    /// Given to the detector as its sink (once: the thread ends when the detector's copy and
    /// ours are gone).
    offer: Mutex<Option<Arc<Offer>>>,
    dropped: Arc<AtomicU64>,
    /// The thread, and what tells that it ended.
    thread: Mutex<Option<(JoinHandle<()>, Receiver<()>)>>,
    thread_id: ThreadId,
}

impl FindingBridge {
    /// Starts the thread that calls `callback(json)` for each finding.
    pub(crate) fn start(callback: PyObject) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Delivery>(QUEUE);
        let (exit_tx, exited) = mpsc::sync_channel::<()>(0);
        let thread = std::thread::Builder::new()
            .name("vana-findings".into())
            .spawn(move || {
                let _exit = exit_tx;
                // Ends when every sender is gone: the detector stopped and `close` ran (or the
                // engine was dropped).
                while let Ok(d) = rx.recv() {
                    match d {
                        Delivery::Finding(json) => Python::with_gil(|py| {
                            if let Err(e) = callback.call1(py, (json,)) {
                                e.write_unraisable(py, Some(callback.bind(py)));
                            }
                        }),
                        Delivery::Flush(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
                // The callable is released with the GIL held.
                Python::with_gil(|_| drop(callback));
            })?;
        let dropped = Arc::new(AtomicU64::new(0));
        Ok(Self {
            offer: Mutex::new(Some(Arc::new(Offer {
                tx: tx.clone(),
                dropped: dropped.clone(),
            }))),
            tx: Mutex::new(Some(tx)),
            dropped,
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some((thread, exited))),
        })
    }

    /// The sink for the detector (`None` after the first call).
    pub(crate) fn take_sink(&self) -> Option<Arc<dyn FindingSink>> {
        let offer = self
            .offer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        Some(offer)
    }

    /// Findings dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every finding queued so far has been handed to the callback (call without
    /// the GIL). From the callback itself (this thread) there is nothing to wait for.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        if std::thread::current().id() == self.thread_id {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let tx = match self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(tx) => tx.clone(),
            None => return true,
        };
        let (ack, done) = mpsc::sync_channel(1);
        let mut msg = Delivery::Flush(ack);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// Delivers what is queued and stops the thread once the detector has stopped (call without
    /// the GIL, after the detector's shutdown); `true` when it ended within `timeout`.
    pub(crate) fn close(&self, timeout: Duration) -> bool {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if std::thread::current().id() == self.thread_id {
            return false;
        }
        let mut guard = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        let Some((thread, exited)) = guard.take() else {
            return true;
        };
        match exited.recv_timeout(timeout) {
            Err(RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                true
            }
            Ok(()) | Err(RecvTimeoutError::Timeout) => {
                *guard = Some((thread, exited));
                false
            }
        }
    }
}
