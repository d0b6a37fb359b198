use clap::Parser;

use callsign::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    callsign::telemetry::init(cli.settings.log_format);
    let result = actix_web::rt::System::new().block_on(cli::run(cli));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("callsign: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
