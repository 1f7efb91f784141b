//! `ferry`: parse the command line, run it, and turn any error into one line and exit code 1.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = ferry_cli::cli::Cli::parse();
    if let Err(e) = cli.run().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
