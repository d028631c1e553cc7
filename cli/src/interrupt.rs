//! Ctrl-C and SIGTERM during long work: a flag the library polls, so it can stop cleanly and
//! leave nothing half-made, instead of dying mid-write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};

/// A flag that becomes true when the user interrupts us.
pub fn cancel_flag() -> Result<Arc<AtomicBool>> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("cannot install the interrupt handler")?;
    Ok(cancel)
}

/// Interrupts during a build. The steps that poll a cancel flag (the pack) stop cleanly when it
/// is set; during any other step an interrupt ends the process at once, as the signal would
/// have, and the commands we started die with us (they are tied to us).
pub struct BuildInterrupt {
    cancel: Arc<AtomicBool>,
    polled: Arc<AtomicBool>,
}

impl BuildInterrupt {
    pub fn install() -> Result<Self> {
        let cancel = Arc::new(AtomicBool::new(false));
        let polled = Arc::new(AtomicBool::new(false));
        let (flag, polling) = (Arc::clone(&cancel), Arc::clone(&polled));
        ctrlc::set_handler(move || {
            if polling.load(Ordering::SeqCst) {
                flag.store(true, Ordering::SeqCst);
            } else {
                eprintln!("interrupted");
                std::process::exit(130);
            }
        })
        .context("cannot install the interrupt handler")?;
        Ok(Self { cancel, polled })
    }

    /// The flag for the steps that poll it.
    pub fn cancel(&self) -> &AtomicBool {
        &self.cancel
    }

    /// The flag, for whoever else may stop the build (its recorder).
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Whether the step under way polls the flag.
    pub fn set_polled(&self, polled: bool) {
        self.polled.store(polled, Ordering::SeqCst);
    }
}
