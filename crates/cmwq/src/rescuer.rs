//! Rescuers: one thread per `MEM_RECLAIM` workqueue, made at creation (so it exists when new
//! threads cannot be made), named `kworker/R-<wq>`, stopped and joined by destroy.

use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::topology;
use crate::workqueue::WqShared;

/// The rescuer of one workqueue.
pub(crate) struct Rescuer {
    shared: Arc<RescuerShared>,
    join: Option<JoinHandle<()>>,
}

struct RescuerShared {
    stop: Mutex<bool>,
    cv: Condvar,
}

impl Rescuer {
    pub(crate) fn start(wq: &Arc<WqShared>) -> Rescuer {
        let shared = Arc::new(RescuerShared {
            stop: Mutex::new(false),
            cv: Condvar::new(),
        });
        let s2 = shared.clone();
        let name = topology::thread_name(&format!("kworker/R-{}", wq.name));
        let join = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _ = topology::set_current_nice(crate::pool::HIGHPRI_NICE);
                let mut stop = s2.stop.lock();
                while !*stop {
                    s2.cv.wait(&mut stop);
                }
            })
            .map_err(|err| {
                tracing::warn!(target: "cmwq", workqueue = %wq.name, %err, "could not create rescuer")
            })
            .ok();
        Rescuer { shared, join }
    }

    pub(crate) fn stop(mut self) {
        *self.shared.stop.lock() = true;
        self.shared.cv.notify_all();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}
