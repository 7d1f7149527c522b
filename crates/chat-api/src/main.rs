//! The `chat-api` binary: loads the configuration (flags, environment, `.env.local`, `.env`),
//! builds the state, binds, and serves until Ctrl-C or SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: a cached request allocates and frees many small
/// buffers (keys, rows, JSON), and glibc's malloc spent a third of the server's time on the mixed
/// workload (docs/benchmarks.md has the profile and the measurement).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // `.env.local` first: dotenvy never overrides a variable that is already set, so the real
    // environment wins over `.env.local`, which wins over `.env`.
    for file in [".env.local", ".env"] {
        match dotenvy::from_filename(file) {
            Ok(_) => {}
            Err(err) if err.not_found() => {}
            Err(err) => return Err(err).with_context(|| format!("reading {file}")),
        }
    }
    let cli = chat_api::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    let config = cli
        .into_config(|name| std::env::var(name).ok())
        .context("checking the configuration")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: chat_api::Config) -> anyhow::Result<()> {
    tracing::info!(?config, "starting");
    let state = chat_api::AppState::from_config(config)
        .await
        .context("building the server state")?;
    let addr = state.config().addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(
        %addr,
        database = state.store().kind(),
        cache = state.cache().cache().backend().name(),
        "listening"
    );
    let hub = state.hub().clone();
    let app = chat_api::app(state.clone());
    let limits = state.config().server;
    chat_api::serve(listener, app, limits, async move {
        chat_api::shutdown_signal().await;
        tracing::info!("shutting down: draining requests and closing WebSocket sessions");
        hub.close_all();
    })
    .await
    .context("serving")?;
    tracing::info!("stopped");
    Ok(())
}
