//! The `aiopsd` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    match aiopsd::cli::run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("aiopsd: {error:#}");
            ExitCode::FAILURE
        }
    }
}
