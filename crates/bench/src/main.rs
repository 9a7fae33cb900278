//! `herald-bench`: Herald's load generator (also `herald bench`). Loopback targets only;
//! every run is bounded in count and time and stops by itself.

use clap::Parser;

/// Herald's load generator.
#[derive(Debug, Parser)]
#[command(name = "herald-bench", version)]
struct Top {
    #[command(flatten)]
    cli: bench::cli::Cli,
}

fn main() {
    std::process::exit(bench::cli::run(Top::parse().cli));
}
