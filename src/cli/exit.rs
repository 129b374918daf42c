//! Every exit code the command line documents, in one place: the codes,
//! the `--help` texts that list them, and the mapping from a broker's
//! refusal to its code. Scripts branch on these numbers: README.md and
//! docs/CI.md list them too, and must change with them.
//!
//! - 0: success (a runner: released, or its job's own exit code);
//! - 1: any other failure, or a runner's session ended by the broker;
//! - 2: command-line misuse (clap's own code, also for a bad `serve --config` file);
//! - 3: no seat: quota exceeded, grant limit, user limit, or with `--wait` no
//!   seat in time or a full queue;
//! - 4: machine limit, or activated elsewhere;
//! - 5: not authenticated, not allowed, or not licensed;
//! - 6: a runner's lease lost (it could not renew before its deadline);
//! - 127: a runner's job could not be started (as a shell's);
//! - `offline verify`'s own outcomes, 10 to 14, come from
//!   `license_broker::offline::VerifyError::exit_code` (docs/OFFLINE.md).

use license_broker::client::ClientError;
use license_broker::proto::ErrorCode;

/// Any failure without a code of its own.
const EXIT_FAILURE: u8 = 1;

/// No seat: the quota, a grant or user limit, or the wait queue.
const EXIT_NO_SEAT: u8 = 3;

/// The machine limit, or a node-locked license activated elsewhere.
const EXIT_MACHINE: u8 = 4;

/// Not authenticated, not allowed, or not licensed.
const EXIT_DENIED: u8 = 5;

/// Exit code of a runner (or floating activation) whose lease was lost: it
/// could not renew before its deadline, or re-attaching was refused.
pub const EXIT_LEASE_LOST: u8 = 6;

/// Exit code of a runner whose job could not be started (as a shell's).
pub const EXIT_NOT_STARTED: u8 = 127;

/// The exit codes of every command, for the top-level `--help`.
pub const EXIT_CODES: &str = "Exit codes: 0 success; 1 other failure (or a runner's session ended by the broker); \
                  2 command-line misuse; 3 quota exceeded or grant limit (or, with --wait, no seat \
                  came in time or the queue is full); 4 machine limit or activated \
                  elsewhere; 5 not authenticated, not allowed or not licensed; 6 lease lost (a runner \
                  could not renew before its deadline).";

/// The exit codes of `runner` and `activate`, for their `--help`.
pub const RUNNER_EXIT_CODES: &str = "Exit codes: 0 released (or, with a job, the job's own exit code); \
    1 failure, or the broker ended the session; 3 quota exceeded (with --wait: no seat came in \
    time, or the queue was full); 4 machine limit or activated \
    elsewhere; 5 not authenticated, not allowed or not licensed; 6 lease lost (with a job: the \
    job was stopped); 127 the job could not be started.";

/// The exit code for an error code: 3 quota (or grant limit), 4 machine
/// limit (or activated elsewhere), 5 authentication/authorisation (or not
/// licensed), 1 otherwise.
pub fn exit_code_for(code: Option<ErrorCode>) -> u8 {
    match code {
        Some(
            ErrorCode::QuotaExceeded
            | ErrorCode::GrantLimit
            | ErrorCode::QueueTimeout
            | ErrorCode::QueueFull
            | ErrorCode::UserLimit
            | ErrorCode::LabelLimit,
        ) => EXIT_NO_SEAT,
        Some(ErrorCode::MachineLimit | ErrorCode::AlreadyActivated) => EXIT_MACHINE,
        Some(ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::NotLicensed) => EXIT_DENIED,
        _ => EXIT_FAILURE,
    }
}

/// The exit code for a failed command.
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    exit_code_for(e.downcast_ref::<ClientError>().and_then(ClientError::code))
}
