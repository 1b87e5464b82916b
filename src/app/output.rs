//! Standard output of the commands. `println!` panics when the reader has gone
//! (`custodian check-config | head -1`); these macros do not: a closed pipe ends the output
//! quietly (what is left is dropped, the command ends with its usual status), any other write
//! error is reported once on standard error and makes the command fail.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);
static FAILED: AtomicBool = AtomicBool::new(false);

/// Writes to standard output unless it is closed (see the module).
pub fn write_fmt(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        note_error(&e);
    }
}

/// Records a write error of standard output: a closed pipe quietly, anything else on stderr.
pub fn note_error(e: &io::Error) {
    if CLOSED.swap(true, Ordering::Relaxed) {
        return;
    }
    if e.kind() != io::ErrorKind::BrokenPipe {
        FAILED.store(true, Ordering::Relaxed);
        eprintln!("custodian: cannot write to standard output: {e}");
    }
}

/// Whether standard output can no longer be written (long outputs stop early).
pub fn is_closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Whether a write to standard output failed for another reason than a closed pipe.
pub fn failed() -> bool {
    FAILED.load(Ordering::Relaxed)
}

/// `println!` that survives a closed pipe.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::app::output::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::app::output::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that survives a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::app::output::write_fmt(format_args!($($arg)*))
    };
}
