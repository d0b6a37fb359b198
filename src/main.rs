use clap::Parser;

use callsign::cli::{self, Cli};

// glibc's allocator took a sixth of the server's CPU under load (malloc, free and
// malloc_consolidate across the worker threads); with mimalloc's per-thread heaps the server
// issues 8-10% more tokens a second (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Held to the end of `main`: dropping it flushes the log lines still queued.
    let _log_writer = callsign::telemetry::init(cli.settings.log_format);
    let result = actix_web::rt::System::new().block_on(cli::run(cli));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("callsign: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
