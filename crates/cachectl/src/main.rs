//! `cachectl`, the operator CLI (not built yet: see issue 6).

use std::process::ExitCode;

fn main() -> ExitCode {
    #[allow(
        clippy::print_stderr,
        reason = "a binary reporting that it does nothing yet"
    )]
    {
        eprintln!("cachectl: error: not implemented yet (issue 6)");
    }
    ExitCode::from(2)
}
