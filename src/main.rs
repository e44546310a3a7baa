//! The `salve` command: parse arguments, build, run. Logic lives in the library.

use std::process::ExitCode;

use clap::Parser;
use salve::app::Salve;
use salve::commands;
use salve::config::{AuditCommand, Cli, Command, PolicyCommand, RulesCommand};

/// Bad configuration, rules or policy: nothing was started.
const EXIT_CONFIG: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    salve::telemetry::install_crypto_provider();
    match cli.command {
        Command::Serve(args) => {
            salve::telemetry::init(args.log_format);
            // Crash points armed through FAILPOINTS (test builds only; see src/crash.rs).
            #[cfg(feature = "failpoints")]
            let _crash_points = fail::FailScenario::setup();
            let settings = match args.settings() {
                Ok(s) => s,
                Err(e) => return fail(EXIT_CONFIG, &e),
            };
            let salve = match Salve::start(&settings).await {
                Ok(s) => s,
                Err(e) => return fail(EXIT_CONFIG, &e),
            };
            reload_on_sighup(salve.reloader.clone());
            let stop = salve.shutdown_token();
            // The server drains for at most 5 s and the engine for at most the grace
            // period; past both (and a margin) salve exits regardless, so a stop never
            // runs into Kubernetes' SIGKILL with work half-recorded.
            let deadline = settings.limits.shutdown_grace + std::time::Duration::from_secs(8);
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down: finishing in-flight remediations");
                stop.cancel();
                tokio::time::sleep(deadline).await;
                tracing::error!(
                    "still not stopped {}s after the signal; exiting now (unfinished remediations are resumed or recorded by the next owner)",
                    deadline.as_secs()
                );
                std::process::exit(1);
            });
            salve.wait().await;
            ExitCode::SUCCESS
        }
        Command::History(args) => {
            print_output(commands::history(&args.database.url, &args.query, args.output).await)
        }
        Command::Alerts(args) => print_output(commands::alerts(&args).await),
        Command::Show { database, id } => print_output(commands::show(&database.url, &id).await),
        Command::Audit(AuditCommand::Verify { database }) => {
            print_output(commands::audit_verify(&database.url).await)
        }
        Command::Audit(AuditCommand::Prune {
            database,
            older_than,
        }) => print_output(commands::audit_prune(&database.url, older_than).await),
        Command::Migrate { database } => print_output(commands::migrate(&database.url).await),
        Command::Policy(PolicyCommand::Test {
            dir,
            verbose,
            run,
            format,
            coverage,
            threshold,
            rego,
        }) => print_output(commands::policy_test(
            &dir,
            rego.options(),
            &commands::TestOptions {
                verbose,
                run,
                format,
                coverage,
                threshold,
            },
        )),
        Command::Policy(PolicyCommand::Check { dir, strict, rego }) => {
            print_output(commands::policy_check(&dir, rego.options(), strict))
        }
        Command::Policy(PolicyCommand::Eval {
            input,
            data,
            policies,
            query,
            rego,
        }) => print_output(commands::policy_eval(
            &policies,
            rego.options(),
            &input,
            &data,
            query.as_deref(),
        )),
        Command::Rules(RulesCommand::Check { dir }) => print_output(commands::rules_check(&dir)),
        Command::Rules(RulesCommand::Report {
            rule,
            database,
            since,
            output,
        }) => print_output(commands::rules_report(&database.url, &rule, since, output).await),
        Command::Stats(args) => {
            print_output(commands::stats(&args.database.url, args.since, args.output).await)
        }
        Command::Pause(args) => print_output(commands::pause(&args).await),
        Command::Resume(args) => print_output(commands::resume(&args).await),
        Command::Approve(args) => print_output(commands::decide(&args, true).await),
        Command::Reject(args) => print_output(commands::decide(&args, false).await),
        Command::Pauses { database, output } => {
            print_output(commands::pauses(&database.url, output).await)
        }
        Command::Replay(args) => print_output(
            commands::replay(
                &args.database.url,
                &args.policies,
                args.rego.options(),
                args.since,
                args.output,
            )
            .await,
        ),
    }
}

fn print_output(out: commands::Output) -> ExitCode {
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    ExitCode::from(out.code)
}

fn fail(code: u8, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("salve: {e}");
    ExitCode::from(code)
}

/// Reloads rules and policy on every SIGHUP, as Prometheus and Alertmanager do.
fn reload_on_sighup(reloader: std::sync::Arc<salve::reload::Reloader>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let _ = reloader.reload("SIGHUP").await;
        }
    });
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
