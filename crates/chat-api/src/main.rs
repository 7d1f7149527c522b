//! The `chat-api` binary (not built yet: see issue 5).

use std::process::ExitCode;

fn main() -> ExitCode {
    #[allow(
        clippy::print_stderr,
        reason = "a binary reporting that it does nothing yet"
    )]
    {
        eprintln!("chat-api: the server is not implemented yet (issue 5)");
    }
    ExitCode::from(2)
}
