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

fn main() -> ExitCode {
    let args = cli::parse_args();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers() {
        builder.worker_threads(n);
    }
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
