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
