//! The `salve` command: parse arguments, build, run. Logic lives in the library.

use std::process::ExitCode;

use clap::Parser;
use salve::app::Salve;
use salve::config::{Cli, Command, OutputFormat, PolicyCommand};
use salve::policy::testing::Outcome;

/// Bad configuration, rules or policy: nothing was started.
const EXIT_CONFIG: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    salve::telemetry::install_crypto_provider();
    match cli.command {
        Command::Serve(args) => {
            salve::telemetry::init(args.log_format);
            let settings = match args.settings() {
                Ok(s) => s,
                Err(e) => return fail(EXIT_CONFIG, &e),
            };
            let salve = match Salve::start(&settings).await {
                Ok(s) => s,
                Err(e) => return fail(EXIT_CONFIG, &e),
            };
            let stop = salve.shutdown_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down: finishing in-flight remediations");
                stop.cancel();
            });
            salve.wait().await;
            ExitCode::SUCCESS
        }
        Command::History(args) => {
            let result = async {
                let store = salve::store::Store::open(&args.database.url).await?;
                let page = salve::api::page(&store, args.limit, None).await?;
                anyhow::Ok(match args.output {
                    OutputFormat::Table => salve::report::history_table(&page.items),
                    OutputFormat::Json => serde_json::to_string_pretty(&page.items)? + "\n",
                })
            }
            .await;
            match result {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e),
            }
        }
        Command::Policy(PolicyCommand::Test { dir }) => policy_test(&dir),
    }
}

fn policy_test(dir: &std::path::Path) -> ExitCode {
    let loaded = salve::bundle::Bundle::read(dir)
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok((salve::policy::PolicySet::load(&b)?, b)));
    let (policy, bundle) = match loaded {
        Ok(pair) => pair,
        Err(e) => return fail(EXIT_CONFIG, &e),
    };
    let results = salve::policy::testing::run(&policy, &bundle);
    let passed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Pass)
        .count();
    for r in results.iter().filter(|r| r.outcome != Outcome::Pass) {
        match &r.outcome {
            Outcome::Error(e) => println!("ERROR: {} ({}): {e}", r.name, r.file),
            _ => println!("FAIL: {} ({})", r.name, r.file),
        }
    }
    let total = results.len();
    if passed == total {
        println!("PASS: {passed}/{total}");
        ExitCode::SUCCESS
    } else {
        println!("FAIL: {}/{total}", total - passed);
        ExitCode::FAILURE
    }
}

fn fail(code: u8, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("salve: {e}");
    ExitCode::from(code)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
