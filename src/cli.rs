//! The command line: `serve` and `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{env_overrides, Config, ConfigError, Override};
use crate::gateway::Gateway;

/// flashgate: a flash-sale traffic-shaping gateway.
#[derive(Debug, Parser)]
#[command(name = "flashgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The TOML config file.
        #[arg(long, short, env = "FLASHGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        /// The TOML config file.
        #[arg(value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        overrides: OverrideArgs,
    },
}

/// Flags that override config keys; they win over `FLASHGATE_*` variables, which win over the file.
#[derive(Debug, Args)]
struct OverrideArgs {
    /// Set any config key, e.g. `--set queue.capacity=5000` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Shorthand for `--set server.listen=ADDR`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Shorthand for `--set server.admin_listen=ADDR`.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Shorthand for `--set upstream.url=URL`.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Shorthand for `--set server.threads=N`.
    #[arg(long, value_name = "N")]
    threads: Option<String>,
    /// Shorthand for `--set log.level=FILTER`.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Shorthand for `--set log.format=text|json`.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

impl OverrideArgs {
    fn collect(&self) -> Result<Vec<Override>, ConfigError> {
        let mut all = env_overrides(std::env::vars())?;
        let shorthands = [
            ("server.listen", &self.listen),
            ("server.admin_listen", &self.admin_listen),
            ("upstream.url", &self.upstream),
            ("server.threads", &self.threads),
            ("log.level", &self.log_level),
            ("log.format", &self.log_format),
        ];
        for (key, value) in shorthands {
            if let Some(v) = value {
                all.push(Override::from_flag(&format!("{key}={v}"))?);
            }
        }
        for arg in &self.set {
            all.push(Override::from_flag(arg)?);
        }
        Ok(all)
    }

    fn load(&self, path: &std::path::Path) -> Result<Config, ConfigError> {
        Config::load(path, &self.collect()?)
    }
}

/// Exit code for a refused configuration (usage errors are clap's 2 as well).
const EXIT_CONFIG: u8 = 2;

/// Parses the command line and runs the chosen command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config, overrides } => match overrides.load(&config) {
            Ok(c) => {
                print!("{}", c.to_toml());
                eprintln!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&e),
        },
        Command::Serve { config, overrides } => match overrides.load(&config) {
            Ok(c) => serve(c),
            Err(e) => config_failure(&e),
        },
    }
}

fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn serve(config: Config) -> ExitCode {
    crate::logging::init(&config.log);
    let runtime = match build_runtime(config.server.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let gateway = match Gateway::start(config).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let token = gateway.shutdown_token();
        tokio::spawn(async move {
            crate::signal::terminated().await;
            tracing::info!("shutdown signal received; draining in-flight requests");
            token.cancel();
        });
        gateway.wait().await;
        tracing::info!("flashgate stopped");
        ExitCode::SUCCESS
    })
}

/// One runtime thread runs a current-thread scheduler (no work-stealing overhead);
/// more run the multi-threaded one.
fn build_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if threads > 1 {
        b.worker_threads(threads);
    }
    b.enable_all().build()
}
