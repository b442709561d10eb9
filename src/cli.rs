//! The command line: `serve` and `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{env_overrides, Config, ConfigError, Override};
use crate::gateway::Gateway;
use tokio_util::sync::CancellationToken;

/// flashgate: a flash-sale traffic-shaping gateway.
#[derive(Debug, Parser)]
#[command(name = "flashgate", version = crate::version::LONG_VERSION, about)]
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
    /// Run a whole flash sale on this machine: demo backend, gateway, memory store, one sale.
    Demo(DemoArgs),
    /// Read or load sale stock in the shared (Redis) store.
    Stock {
        /// The TOML config file (its `[store]` says where the stock lives).
        #[arg(long, short, env = "FLASHGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        overrides: OverrideArgs,
        #[command(subcommand)]
        action: StockAction,
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

/// What `flashgate stock` does.
#[derive(Debug, Subcommand)]
enum StockAction {
    /// Print one sale's stock.
    Get {
        /// The sale.
        sku: String,
    },
    /// Set one sale's stock (replacing what is there), under a new epoch: how an operator
    /// loads stock, including after the store lost its state.
    Set {
        /// The sale.
        sku: String,
        /// Units (at most 2^53 - 1).
        units: u64,
    },
    /// Add units to a live sale's stock atomically (negative: take them away).
    Add {
        /// The sale.
        sku: String,
        /// Units to add.
        #[arg(allow_negative_numbers = true)]
        units: i64,
    },
    /// Print the stock of every configured sale.
    List,
}

/// `flashgate demo` settings; every one maps to a config key of the demo's gateway.
#[derive(Debug, Args)]
struct DemoArgs {
    /// Gateway listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Admin listener.
    #[arg(long, default_value = "127.0.0.1:8090")]
    admin_listen: String,
    /// Demo backend listener.
    #[arg(long, default_value = "127.0.0.1:8081")]
    backend_listen: std::net::SocketAddr,
    /// The demo sale's sku.
    #[arg(long, default_value = "demo-phone")]
    sku: String,
    /// Units for sale.
    #[arg(long, default_value_t = 100)]
    stock: u64,
    /// Queued requests released per second.
    #[arg(long, default_value_t = 50)]
    drain_rate: u32,
    /// Queue capacity.
    #[arg(long, default_value_t = 1000)]
    capacity: usize,
    /// Concurrent order workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Full queue: reject or redirect.
    #[arg(long, default_value = "reject")]
    overflow: String,
    /// Answer orders in wait or async mode.
    #[arg(long, default_value = "wait")]
    response: String,
    /// Units one user may buy.
    #[arg(long, default_value_t = 1)]
    per_user_limit: u32,
    /// Requests per second per user on sale routes (0 = off).
    #[arg(long, default_value_t = 5)]
    per_user_rate: u32,
    /// Runtime worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Log filter.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// How far a delivery's signature time may be from the backend's clock.
    #[arg(long, default_value = "5m")]
    signature_tolerance: humantime::Duration,
    /// Bearer token of the admin API (`/admin/`); without it a random one is made and
    /// printed.
    #[arg(long)]
    admin_token: Option<String>,
}

impl DemoArgs {
    fn config_text(&self, backend: std::net::SocketAddr, admin_token: &str) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        format!(
            "[server]\nlisten = {}\nadmin_listen = {}\nthreads = {}\nshutdown_timeout = \"10s\"\n\
             shutdown_grace = \"0s\"\n\
             [upstream]\nurl = \"http://{backend}\"\n\
             [queue]\ncapacity = {}\ndrain_rate = {}\nworkers = {}\noverflow = {}\nresponse = {}\n\
             [limits]\nper_user_rate = {}\nper_user_burst = {}\n\
             [[sale]]\nsku = {}\nstock = {}\nper_user_limit = {}\n\
             [log]\nlevel = {}\n[admin]\ntoken = {}\n",
            q(&self.listen),
            q(&self.admin_listen),
            self.threads,
            self.capacity,
            self.drain_rate,
            self.workers,
            q(&self.overflow),
            q(&self.response),
            self.per_user_rate,
            self.per_user_rate.saturating_mul(2),
            q(&self.sku),
            self.stock,
            self.per_user_limit,
            q(&self.log_level),
            q(admin_token),
        )
    }
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
            Ok(c) => check_config(c, &config),
            Err(e) => config_failure(&e),
        },
        Command::Serve { config, overrides } => {
            crate::signal::ignore_hangups_while_starting();
            match overrides.load(&config) {
                // SIGHUP reads the file again, with the same overrides.
                Ok(c) => serve(c, Box::new(move || overrides.load(&config))),
                Err(e) => config_failure(&e),
            }
        }
        Command::Demo(args) => {
            crate::signal::ignore_hangups_while_starting();
            demo(&args)
        }
        Command::Stock {
            config,
            overrides,
            action,
        } => match overrides.load(&config) {
            Ok(c) => stock(c, action),
            Err(e) => config_failure(&e),
        },
    }
}

/// Prints the effective config and its warnings, then composes the gateway from it
/// without binding anything: templates, TLS files and the store's address are read as
/// `serve` would read them.
fn check_config(config: Config, path: &std::path::Path) -> ExitCode {
    print!("{}", config.to_toml());
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    // Building pools and the store needs a runtime to exist, not to run.
    let rt = match one_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let _entered = rt.enter();
    match Gateway::build(config) {
        Ok(_) => {
            eprintln!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            start_failure(&e)
        }
    }
}

/// The exit code of a gateway that could not start: what check-config refuses, serve
/// refuses with the same code.
fn start_failure(e: &crate::gateway::StartError) -> ExitCode {
    match e.is_configuration() {
        true => ExitCode::from(EXIT_CONFIG),
        false => ExitCode::FAILURE,
    }
}

/// A current-thread runtime for the short commands; a failure is reported and exits 1.
fn one_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// Starts logging and the runtime for `config`, then runs `main` on it.
fn run<F: std::future::Future<Output = ExitCode>>(config: &Config, main: F) -> ExitCode {
    crate::logging::init(&config.log);
    match build_runtime(config.server.threads) {
        Ok(rt) => rt.block_on(main),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config, source: crate::gateway::reload::ConfigSource) -> ExitCode {
    let settings = config.clone();
    run(&settings, async move {
        let signals = crate::signal::Terminations::watch();
        let started = match Gateway::build(config) {
            Ok(built) => built.reloading_from(source).start().await,
            Err(e) => Err(e),
        };
        let gateway = match started {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("{e}");
                return start_failure(&e);
            }
        };
        let stopper = gateway.stopper();
        tokio::spawn(signals.run(move || stopper.stop()));
        if let Err(e) = gateway.wait().await {
            tracing::error!(error = %e, "stopped, but undelivered orders could not be kept");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        tracing::info!("flashgate stopped");
        ExitCode::SUCCESS
    })
}

fn stock(config: Config, action: StockAction) -> ExitCode {
    use crate::local_state::LocalState;
    use crate::types::Sku;
    if !config.store.kind.is_shared() {
        eprintln!(
            "error: config key `store.kind`: stock commands need \"redis\" or \"redis-cluster\"; \
             the memory store lives inside the serving process"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let rt = match one_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        // Behind the breaker, every call is bounded by store.timeout: a dead Redis is an
        // error, not a hang.
        let store = match crate::gateway::store::open(&config.store, &LocalState::none(), None) {
            Ok(opened) => opened.store,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Stock written under another key layout would be misread by the gateways.
        if let Err(e) = store.claim_layout(crate::store::KEY_LAYOUT).await {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        let result = match action {
            StockAction::Get { sku } => store
                .stock(&Sku::new(&sku))
                .await
                .map(|n| println!("{sku} {}", n.units)),
            StockAction::Set { sku, units } => store
                .set_stock(&Sku::new(&sku), units)
                .await
                .map(|epoch| println!("{sku} {units} (epoch {epoch})")),
            StockAction::Add { sku, units } => store
                .add_stock(&Sku::new(&sku), units)
                .await
                .map(|now| println!("{sku} {now}")),
            StockAction::List => {
                let mut out = Ok(());
                for sale in &config.sales {
                    match store.stock(&Sku::new(&sale.sku)).await {
                        Ok(n) => println!("{} {}", sale.sku, n.units),
                        Err(crate::store::StoreError::UnknownSale(_)) => {
                            println!("{} (not loaded)", sale.sku)
                        }
                        Err(e) => {
                            out = Err(e);
                            break;
                        }
                    }
                }
                out
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn demo(args: &DemoArgs) -> ExitCode {
    // Validate everything before binding anything; the backend port is checked by binding.
    // The admin API is on in the demo: with the operator's token, else one made for this run.
    let admin_token = args
        .admin_token
        .clone()
        .unwrap_or_else(|| crate::types::OrderId::random().as_str().to_owned());
    let probe = match Config::from_toml(
        &args.config_text(args.backend_listen, &admin_token),
        "demo flags",
        &[],
    ) {
        Ok(c) => c,
        Err(e) => return config_failure(&e),
    };
    // The demo shows deliveries signed and verified, under a secret made for this run.
    let secret = crate::types::OrderId::random().as_str().to_owned();
    let backend =
        crate::demo::DemoBackend::default().verifying(&secret, args.signature_tolerance.into());
    let admin_token = &admin_token;
    let config_text = |backend_addr| {
        format!(
            "{}[delivery]\nsigning_secret = \"{secret}\"\n",
            args.config_text(backend_addr, admin_token)
        )
    };
    run(&probe, async move {
        let signals = crate::signal::Terminations::watch();
        let stop = CancellationToken::new();
        let (backend_addr, backend, backend_task) =
            match crate::demo::serve_backend(args.backend_listen, backend, stop.clone()).await {
                Ok(b) => b,
                Err(e) => {
                    eprintln!(
                        "error: cannot listen on {} (--backend-listen): {e}",
                        args.backend_listen
                    );
                    return ExitCode::FAILURE;
                }
            };
        let config = match Config::from_toml(&config_text(backend_addr), "demo flags", &[]) {
            Ok(c) => c,
            Err(e) => return config_failure(&e),
        };
        let started = match Gateway::build(config) {
            Ok(built) => built.with_demo_identities().start().await,
            Err(e) => Err(e),
        };
        let gateway = match started {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        print_demo_banner(
            args,
            admin_token,
            gateway.public_addr,
            gateway.admin_addr,
            backend_addr,
        );
        let stopper = gateway.stopper();
        tokio::spawn(signals.run(move || stopper.stop()));
        let kept = gateway.wait().await;
        stop.cancel();
        let _ = backend_task.await;
        println!(
            "demo stopped: the backend recorded {} orders",
            backend.orders()
        );
        match kept {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn print_demo_banner(
    args: &DemoArgs,
    admin_token: &str,
    gw: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    backend: std::net::SocketAddr,
) {
    let sku = &args.sku;
    println!("flashgate demo");
    println!("  gateway  http://{gw}   (admin http://{admin}/healthz)");
    println!("  backend  http://{backend}   (orders: http://{backend}/orders/stats)");
    println!(
        "  sale     {sku}: {} units, drain {}/s, queue {} ({}), {} mode, {} per user",
        args.stock,
        args.drain_rate,
        args.capacity,
        args.overflow,
        args.response,
        args.per_user_limit
    );
    println!();
    println!("Try it:");
    println!("  curl -s http://{gw}/sale/{sku}");
    println!(
        "  TOKEN=$(curl -s -X POST -H 'X-User-Id: alice' http://{gw}/sale/{sku}/token | sed 's/.*\"token\":\"\\([0-9a-f]*\\)\".*/\\1/')"
    );
    println!(
        "  curl -s -X POST -H 'X-User-Id: alice' -H \"X-Sale-Token: $TOKEN\" http://{gw}/sale/{sku}/order"
    );
    println!("  curl -s http://{backend}/orders/stats");
    println!(
        "  curl -s -H 'Authorization: Bearer {admin_token}' http://{admin}/admin/sales   (the admin API)"
    );
    println!("  curl -s http://{gw}/   (anything else is proxied to the backend)");
    println!();
    println!("In a browser:");
    println!(
        "  http://{gw}/sale/{sku}/wait   (the sale page: Buy, then the waiting room; the demo gives \
         each browser an identity in a cookie, where `serve` needs an auth layer's X-User-Id)"
    );
    println!();
    println!("Ctrl-C stops it.");
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
