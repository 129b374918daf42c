//! `license-broker`: the broker (`serve`) and every client command.
//!
//! Errors are printed as one readable line (never a backtrace) and mapped to
//! exit codes: 3 quota exceeded, 4 machine limit, 5 authentication or
//! authorisation, 6 a runner's lease lost, 2 command-line misuse, 1
//! anything else (listed in `--help`).

mod cli;

// mimalloc: glibc malloc's consolidation pauses showed in profiles under
// churn; the broker allocates small, short-lived buffers at a high rate.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

/// Called by each worker thread as it goes idle: at most once a second per
/// thread, hands the thread's free allocator pages back to the OS. mimalloc
/// frees a thread's pages only when that thread allocates again, so without
/// this a burst (an attack, a million sessions ending) would stay resident
/// for as long as the broker is quiet.
fn return_free_memory() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    if LAST.get().is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: mi_collect only walks this thread's heap (and abandoned
    // pages); it takes no pointers and may be called from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

fn main() -> ExitCode {
    let args = cli::parse_args();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers() {
        builder.worker_threads(n);
    }
    builder.on_thread_park(return_free_memory);
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::exit_code_of(&e))
        }
    }
}
