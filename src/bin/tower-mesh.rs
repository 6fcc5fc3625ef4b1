//! `tower-mesh`: the command-line tool.
//!
//! `tower-mesh validate PATH...` checks Istio YAML the way `istioctl validate -f` does, with
//! every problem of every document and its field path. Exit status: 0 when valid (warnings
//! allowed), 1 when not, 2 on usage errors.
//!
//! `tower-mesh proxy --config DIR [--listen ADDR] [--admin ADDR] [--namespace NS]
//! [--mode sidecar|inbound] [--app ADDR] [--num-trusted-proxies N]` runs a proxy from a
//! config directory ([`tower_mesh::proxy::Proxy`]) until SIGTERM or ctrl-c, then drains.
//! Exit status: 0 after a clean drain, 1 when the proxy cannot start or fails.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tower_mesh::config::{ConfigSet, Loader};
use tower_mesh::validate::{Report, ValidationError, validate};

/// mimalloc (v2, without transparent huge pages): a proxied request allocates and frees
/// ~40 blocks, hyper's 8 KiB read buffers among them, and glibc's malloc spent ~12% of the
/// proxy's time there (malloc_consolidate on every buffer bigger than its thread cache).
/// With huge pages mimalloc's resident memory grew by 6 MB; without them it matches glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tower-mesh",
    version,
    about = "An in-process service mesh driven by Istio's configuration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate Istio YAML files or directories (like `istioctl validate -f`).
    Validate {
        /// Files or directories (searched recursively for .yaml, .yml and .json); `-` reads
        /// standard input.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Do not print warnings (they never make the config invalid).
        #[arg(long)]
        no_warnings: bool,
    },
    /// Run a proxy (sidecar outbound, inbound, or an ingress gateway) from a directory of
    /// Istio YAML.
    Proxy(ProxyArgs),
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// The Istio YAML: a file or a directory (read recursively, reloaded on change).
    #[arg(long, value_name = "DIR")]
    config: PathBuf,
    /// Where to listen (repeatable).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15001")]
    listen: Vec<SocketAddr>,
    /// Where to serve the admin endpoint (/metrics, /config_dump, /clusters, /ready, ...).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// This workload's namespace: short names resolve in it.
    #[arg(long, value_name = "NS", default_value = "default")]
    namespace: String,
    /// What the proxy does with the traffic it accepts.
    #[arg(long, value_enum, default_value_t = ModeArg::Sidecar)]
    mode: ModeArg,
    /// The local application's address (`--mode inbound`).
    #[arg(long, value_name = "ADDR", required_if_eq("mode", "inbound"))]
    app: Option<SocketAddr>,
    /// Proxies in front of this one trusted in x-forwarded-for (Istio's numTrustedProxies).
    #[arg(long, value_name = "N", default_value_t = 0)]
    num_trusted_proxies: u32,
    /// Seconds in-flight requests get to finish after SIGTERM or ctrl-c.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    drain_seconds: f64,
    /// This workload's labels, `key=value` (repeatable; Gateways select by them, e.g.
    /// `--labels istio=ingressgateway`).
    #[arg(long = "labels", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// `--mode gateway`: serve Gateway port PORT on ADDR instead of on the listen IP with the
    /// same port, `PORT=ADDR` (repeatable).
    #[arg(long = "gateway-port", value_name = "PORT=ADDR", value_parser = parse_port_map)]
    gateway_ports: Vec<(u16, SocketAddr)>,
    /// Worker threads (Envoy's `--concurrency`); default: one per CPU the process may use.
    /// With 1 the proxy runs on a single-threaded runtime.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: Option<u16>,
    /// Print an access log line per request on standard output.
    #[arg(long, value_enum, default_value_t = AccessLogArg::Off)]
    access_log: AccessLogArg,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AccessLogArg {
    /// No access log (Istio's default).
    Off,
    /// Envoy's default text format.
    Envoy,
    /// One JSON object per line.
    Json,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_port_map(s: &str) -> Result<(u16, SocketAddr), String> {
    let (port, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected PORT=ADDR, got {s:?}"))?;
    let port = port
        .parse()
        .map_err(|_| format!("not a port number: {port:?}"))?;
    let addr = addr
        .parse()
        .map_err(|_| format!("not a socket address: {addr:?}"))?;
    Ok((port, addr))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Outbound: route the application's requests by authority through the mesh.
    Sidecar,
    /// Inbound: in front of the application at --app, with the workload's security policies.
    Inbound,
    /// Ingress gateway: the Gateway resources selecting --labels, one listener per port.
    Gateway,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    /// One line per problem, then a summary.
    Text,
    /// One JSON object, for machines.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate {
            paths,
            output,
            no_warnings,
        } => run_validate(&paths, output, no_warnings),
        Command::Proxy(args) => run_proxy(args),
    }
}

/// Logs on standard error (level from `RUST_LOG`-like `TOWER_MESH_LOG`: error, warn, info,
/// debug, trace; default info), the access log undecorated on standard output.
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, fmt};

    let level = std::env::var("TOWER_MESH_LOG")
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let access = tower_mesh::telemetry::access_log::TARGET;
    let logs = fmt::layer().with_writer(io::stderr).with_filter(
        Targets::new()
            .with_default(level)
            .with_target(access, LevelFilter::OFF),
    );
    let access_log = fmt::layer()
        .with_writer(io::stdout)
        .event_format(MessageOnly)
        .with_filter(Targets::new().with_target(access, LevelFilter::INFO));
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(access_log)
        .try_init();
}

/// Formats an event as its message alone (an access-log line is complete as it is).
struct MessageOnly;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for MessageOnly
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::FormatFields as _;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn run_proxy(args: ProxyArgs) -> ExitCode {
    init_logging();
    // One worker thread per CPU the process may run on (its affinity mask: `taskset` and
    // cpusets count), as Envoy's `--concurrency` defaults to. On one CPU a current-thread
    // runtime serves the same load without the work-stealing scheduler's overhead (about a
    // fifth more requests per second through the proxy on one pinned core).
    let threads = args.concurrency.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(proxy(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn proxy(args: ProxyArgs) -> Result<(), tower_mesh::proxy::ProxyError> {
    use tower_mesh::proxy::{Mode, Proxy};

    use tower_mesh::telemetry::access_log::AccessLogFormat;

    let mode = match (args.mode, args.app) {
        (ModeArg::Inbound, Some(app)) => Mode::Inbound { app },
        (ModeArg::Gateway, _) => Mode::Gateway,
        _ => Mode::Sidecar,
    };
    let access_log = match args.access_log {
        AccessLogArg::Off => None,
        AccessLogArg::Envoy => Some(AccessLogFormat::Envoy),
        AccessLogArg::Json => Some(AccessLogFormat::Json),
    };
    let drain = Duration::try_from_secs_f64(args.drain_seconds).unwrap_or(Duration::from_secs(5));
    let mut builder = Proxy::new(&args.config)
        .mode(mode)
        .namespace(args.namespace)
        .num_trusted_proxies(args.num_trusted_proxies)
        .drain_timeout(drain)
        .access_log(access_log);
    if !args.labels.is_empty() {
        builder = builder.labels(args.labels.clone());
    }
    for addr in &args.listen {
        builder = builder.listen(*addr);
    }
    for (port, addr) in &args.gateway_ports {
        builder = builder.gateway_port(*port, *addr);
    }
    if let Some(admin) = args.admin {
        builder = builder.admin(admin);
    }
    let proxy = builder.bind().await?;
    let handle = proxy.handle();
    for addr in handle.local_addrs() {
        // Tests and scripts read this line to find an ephemeral port.
        println!("tower-mesh proxy: listening on {addr}");
    }
    if let Some(addr) = handle.admin_addr() {
        println!("tower-mesh proxy: admin on {addr}");
    }
    let signals = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("tower-mesh proxy: draining");
        signals.shutdown();
    });
    let _ = io::stdout().flush();
    proxy.serve().await
}

/// SIGTERM (what Kubernetes sends) or ctrl-c.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn run_validate(paths: &[PathBuf], output: Output, no_warnings: bool) -> ExitCode {
    let loader = Loader::new();
    let mut set = ConfigSet::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            if let Err(e) = io::stdin().read_to_string(&mut text) {
                eprintln!("error: cannot read standard input: {e}");
                return ExitCode::from(2);
            }
            let mut s = loader.load_named_str(&text, Path::new("<stdin>"));
            s.files = 1;
            set.extend(s);
        } else if !path.exists() {
            eprintln!("error: {}: no such file or directory", path.display());
            return ExitCode::from(2);
        } else {
            set.extend(loader.load_path(path));
        }
    }
    let mut report = validate(&set);
    if no_warnings {
        report.problems.retain(ValidationError::is_error);
    }
    let written = match output {
        Output::Text => print_text(&set, &report),
        Output::Json => print_json(&set, &report),
    };
    if let Err(e) = written
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        eprintln!("error: cannot write output: {e}");
        return ExitCode::from(2);
    }
    if report.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// `3 VirtualService, 2 DestinationRule`
fn count_by<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in names {
        *counts.entry(n).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(set: &ConfigSet, report: &Report) -> String {
    let errors = report.errors().count();
    let warnings = report.warnings().count();
    let verdict = if errors == 0 { "valid" } else { "invalid" };
    let mut s = format!(
        "{verdict}: {} in {}",
        plural(set.resources.len(), "resource"),
        plural(set.files, "file")
    );
    if !set.resources.is_empty() {
        s.push_str(&format!(
            " ({})",
            count_by(set.resources.iter().map(|r| r.kind().as_str()))
        ));
    }
    if !set.skipped.is_empty() {
        s.push_str(&format!(
            "; skipped {} ({})",
            plural(set.skipped.len(), "document"),
            count_by(set.skipped.iter().map(|s| s.kind.as_str()))
        ));
    }
    s.push_str(&format!(
        "; {}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    ));
    s
}

fn print_text(set: &ConfigSet, report: &Report) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for p in &report.problems {
        write!(out, "{p}")?;
        // Say where, unless the line already starts with the file (syntax errors).
        if p.resource.is_some() {
            write!(out, " ({})", p.source)?;
        }
        writeln!(out)?;
    }
    writeln!(out, "{}", summary(set, report))
}

fn print_json(set: &ConfigSet, report: &Report) -> io::Result<()> {
    let problems: Vec<serde_json::Value> = report
        .problems
        .iter()
        .map(|p| {
            serde_json::json!({
                "severity": p.severity.to_string(),
                "kind": p.resource.as_ref().map(|r| r.kind.as_str()),
                "namespace": p.resource.as_ref().map(|r| r.namespace.as_str()),
                "name": p.resource.as_ref().map(|r| r.name.as_str()),
                "path": p.path,
                "message": p.message,
                "rule": p.rule,
                "file": p.source.file.as_ref().map(|f| f.display().to_string()),
                "document": p.source.document,
                "line": p.source.line,
            })
        })
        .collect();
    let resources: Vec<serde_json::Value> = set
        .resources
        .iter()
        .map(|r| {
            serde_json::json!({
                "kind": r.kind().as_str(),
                "apiVersion": r.api_version,
                "namespace": r.metadata.namespace,
                "name": r.metadata.name,
                "file": r.source.file.as_ref().map(|f| f.display().to_string()),
                "document": r.source.document,
            })
        })
        .collect();
    let skipped: Vec<serde_json::Value> = set
        .skipped
        .iter()
        .map(|s| {
            serde_json::json!({
                "kind": s.kind,
                "apiVersion": s.api_version,
                "name": s.name,
                "file": s.source.file.as_ref().map(|f| f.display().to_string()),
                "document": s.source.document,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "valid": !report.has_errors(),
        "errors": report.errors().count(),
        "warnings": report.warnings().count(),
        "files": set.files,
        "resources": resources,
        "skipped": skipped,
        "problems": problems,
        "summary": summary(set, report),
    });
    let stdout = io::stdout();
    let mut out = stdout.lock();
    serde_json::to_writer_pretty(&mut out, &doc).map_err(io::Error::other)?;
    writeln!(out)
}
