//! How long the daemon takes to parse a config with many sites: most of a
//! cold start's time before it is ready (`scripts/bench` measures the whole
//! cold `get`). Prints the fastest of the runs and their median.
//!
//!   cargo run --release -p tokend --example config_parse -- [SITES] [RUNS]

use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let sites: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let text: String = (0..sites)
        .map(|i| {
            format!(
                "[site.s{i}]\nissuer = \"https://auth.example\"\nclient_id = \"cc-client\"\n\
                 client_secret_env = \"CC\"\ngrant = \"client_credentials\"\nscopes = [\"read\"]\n\n"
            )
        })
        .collect();
    let path = std::path::Path::new("config.toml");
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            let config = tokend::config::Config::parse(path, &text);
            let took = started.elapsed();
            assert_eq!(config.sites.len(), sites, "{:?}", config.errors);
            took
        })
        .collect();
    times.sort();
    println!(
        "Config::parse, {sites} sites: fastest {:.2} ms, median {:.2} ms ({} runs)",
        times[0].as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times.len()
    );
}
