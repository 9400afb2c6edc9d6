//! berthd: composes configuration, storage and the HTTP routes into the registry server.

pub mod authz;
pub mod downloads;
pub mod error;
pub mod gc;
pub mod health;
pub mod http;
pub mod observe;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Extensions, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{self, DefaultHeaders};
use actix_web::{web, App};
use berth_auth::Accounts;
use berth_config::{Config, StorageConfig};
use berth_storage::Storage;
use tokio::net::{TcpSocket, TcpStream};

use actix_http::error::DispatchError;
use actix_http::HttpService;
use actix_service::{fn_service, map_config, ServiceFactoryExt};

use downloads::Connection;

/// How much response body actix-web gathers before writing to the socket: two 512 KiB
/// blob reads, so downloads go out in large writes. A power of two, so the buffer's
/// growth (doubling) ends exactly at it and actix-web keeps the allocation between
/// writes instead of allocating (and faulting in) a new one per chunk.
const WRITE_BUFFER_SIZE: usize = 1024 * 1024;

/// Shared by every request handler.
pub struct AppState {
    pub storage: Storage,
    /// Token authentication, once on.
    pub auth: Arc<authz::Auth>,
    /// Pull-through caches of other registries (`[[proxy]]`).
    pub proxies: Arc<berth_proxy::Proxies>,
    /// This instance and the registry's address, as events report them.
    pub events: berth_events::origin::EventSource,
}

/// A listening socket as actix-web makes one (address reuse, a deep accept queue).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(2048)?.into_std()
}

/// Opens storage and serves the registry on `config.listen` until SIGINT/SIGTERM,
/// letting in-flight requests finish.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let storage = open_storage(&config).await?;
    // One set of password checks (rate limits, remembered passwords) for the token
    // endpoint and the web sign-in, whenever auth turns on: clones of one `Accounts`.
    let accounts = Accounts::open(&config).await?;
    let auth = open_auth(&config, &accounts).await?;
    actix_web::rt::spawn(expire_uploads(storage.clone(), config.upload_expiry_secs));
    actix_web::rt::spawn(flush_pulls(storage.clone()));
    if let Some(retention) = config.audit_retention {
        actix_web::rt::spawn(expire_audit_log(storage.clone(), retention));
    }
    if let Some(interval) = config.gc.interval {
        actix_web::rt::spawn(gc::run(storage.clone(), interval));
    }
    let accounts_on = {
        let auth = auth.clone();
        Arc::new(move || auth.current().is_some())
    };
    claim_proxy_prefixes(&config, &accounts, &storage).await?;
    let proxies = Arc::new(berth_proxy::Proxies::open(
        &config.proxies,
        &storage,
        &config.data_dir,
    )?);
    let events = berth_events::origin::EventSource::new(
        config.listen.to_string(),
        config.auth.external_url.clone(),
    );
    let ui = web::Data::new(
        berth_web_ui::Web::new(
            storage.clone(),
            accounts,
            accounts_on,
            config.auth.external_url.clone(),
            proxies.clone(),
            config.auth.signup,
        )
        .with_events(events.clone(), config.webhooks.allow_private),
    );
    berth_events::start(storage.clone(), &config, events.source.instance_id.clone())?;
    let state = web::Data::new(AppState {
        storage: storage.clone(),
        auth,
        proxies,
        events,
    });
    // The registry (with the web UI) on `listen`; each proxy's mirror listener serves
    // the registry API alone, every name under the proxy's prefix.
    let main = bind(config.listen)?;
    let addr = main.local_addr()?;
    let mut listeners = vec![("berthd".to_owned(), main, None)];
    for proxy in config.proxies.iter() {
        if let Some(mirror) = proxy.mirror_listen {
            let listener = bind(mirror).map_err(|e| {
                anyhow::anyhow!("proxy {}: mirror_listen {mirror}: {e}", proxy.prefix)
            })?;
            tracing::info!(
                "mirror of {} (proxy {}) listening on http://{}",
                proxy.upstream,
                proxy.prefix,
                listener.local_addr()?
            );
            listeners.push((
                format!("mirror-{}", proxy.prefix),
                listener,
                Some(proxy.prefix.clone()),
            ));
        }
    }
    // What actix-web's `HttpServer` composes, over berthd's own connection type (for
    // downloads written straight from files, see `downloads`).
    let mut builder = actix_server::Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    for (name, listener, mirror) in listeners {
        let local = listener.local_addr()?;
        let (state, ui, shutdown) = (state.clone(), ui.clone(), shutdown.clone());
        builder = builder.listen(name, listener, move || {
            let app = registry_base(state.clone()).app_data(ui.clone());
            let app = match &mirror {
                None => app
                    .configure(routes::configure)
                    .configure(berth_web_ui::configure),
                Some(prefix) => app
                    .configure(routes::configure_mirror)
                    .app_data(authz::MirrorOf(prefix.clone())),
            };
            let shutdown = shutdown.clone();
            let http = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .h1_write_buffer_size(WRITE_BUFFER_SIZE)
                // As `HttpServer` does: after an early answer (an error before the body
                // was read), the rest of the body is read and dropped for up to a second
                // before closing, so the client sees the answer rather than a reset.
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                .local_addr(local)
                .on_connect_ext(|conn: &Connection, data: &mut Extensions| conn.attach(data))
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(|socket: TcpStream| {
                let conn = Connection::new(socket);
                let peer = conn.peer_addr();
                std::future::ready(Ok::<_, DispatchError>((conn, peer)))
            })
            .and_then(http)
        })?;
    }
    let server = builder.run();
    tracing::info!(
        "berthd listening on http://{addr} ({})",
        describe_storage(&config)
    );
    server.await?;
    if let Err(e) = storage.flush_pulls().await {
        tracing::warn!(error = %e, "pull counts since the last flush are lost");
    }
    tracing::info!("berthd stopped");
    Ok(())
}

/// The registry's app: the gate (each `/v2` request parsed once, then authorized),
/// the API version header, metrics, the routes and the 404 fallback. `serve` adds the
/// web UI to it; the in-process tests use it as it is.
pub fn registry_app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    registry_base(state).configure(routes::configure)
}

/// What every listener serves: the gate, the API version header, metrics and the 404
/// fallback; the main listener adds its routes (`routes::configure`), a proxy's mirror
/// listener only the token endpoint (`routes::configure_mirror`).
fn registry_base(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .wrap(middleware::from_fn(authz::registry))
        .wrap(DefaultHeaders::new().add(("Docker-Distribution-API-Version", "registry/2.0")))
        .wrap(middleware::from_fn(observe::observe))
        .default_service(web::to(routes::not_found))
}

/// A proxy's prefix is its namespace alone, claimed as the proxy's in the accounts'
/// namespaces (so no user or organization can take it later). A name someone already
/// has, or repositories already under it that are not the proxy's cache, stop the
/// server: they would be served, and evicted, as the upstream's. Its repositories are
/// listed as its access rule says.
async fn claim_proxy_prefixes(
    config: &Config,
    accounts: &Accounts,
    storage: &Storage,
) -> anyhow::Result<()> {
    for proxy in &config.proxies {
        let prefix = &proxy.prefix;
        match accounts.namespace_kind(prefix).await? {
            Some(berth_auth::namespaces::Kind::Proxy) => {}
            Some(owner) => anyhow::bail!(
                "proxy prefix {prefix:?} is the namespace of {owner} named {prefix}: choose another prefix"
            ),
            None if storage.has_repositories_under(prefix).await? => anyhow::bail!(
                "repositories named {prefix}/… exist and are not a proxy's cache: choose another prefix"
            ),
            None => accounts.claim_proxy_namespace(prefix).await?,
        }
        storage
            .list_namespace_as(prefix, proxy.access == berth_config::ProxyAccess::Anonymous)
            .await?;
        if proxy.credentials_env.is_some() && proxy.upstream.starts_with("http://") {
            tracing::warn!(
                "proxy {prefix}: credentials for {} go over plain HTTP",
                proxy.upstream
            );
        }
    }
    Ok(())
}

/// Storage, its tables in place. (Accounts open their own pool on the same database:
/// [`Accounts::open`].)
pub async fn open_storage(config: &Config) -> anyhow::Result<Storage> {
    Ok(Storage::open(config).await?)
}

/// Where the data lives, for the start-up line (never the database URL: it may hold a
/// password).
fn describe_storage(config: &Config) -> String {
    let database = match &config.database_url {
        None => "SQLite",
        Some(url) if url.starts_with("postgres") => "PostgreSQL",
        Some(url) if url.starts_with("sqlite") => "SQLite",
        Some(_) => "database from config",
    };
    match &config.storage {
        StorageConfig::Filesystem { .. } => format!(
            "{database}, blobs in {}; data in {}",
            config.blob_root().expect("filesystem root").display(),
            config.data_dir.display()
        ),
        StorageConfig::S3 { bucket, .. } => format!("{database}, blobs in S3 bucket {bucket}"),
    }
}

/// Deletes abandoned uploads, forever, at a quarter of the expiry time (1 s to 5 min).
async fn expire_uploads(storage: Storage, expiry_secs: u64) {
    let period = std::time::Duration::from_secs((expiry_secs / 4).clamp(1, 300));
    let mut ticker = actix_web::rt::time::interval(period);
    loop {
        ticker.tick().await;
        match storage.expire_uploads(expiry_secs as i64 * 1000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("deleted {n} abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "expiring uploads failed; will retry"),
        }
    }
}

/// Deletes audit log entries older than `retention`, forever, hourly (the first at
/// start-up: a server down for a while catches up at once).
async fn expire_audit_log(storage: Storage, retention: std::time::Duration) {
    let mut ticker = actix_web::rt::time::interval(std::time::Duration::from_secs(3600));
    loop {
        ticker.tick().await;
        match storage.expire_audit_log(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("deleted {n} audit log entries past their retention"),
            Err(e) => tracing::warn!(error = %e, "expiring audit log entries failed; will retry"),
        }
    }
}

/// Writes pull counts every few seconds (see `berth_storage::pulls`).
async fn flush_pulls(storage: Storage) {
    let mut ticker = actix_web::rt::time::interval(std::time::Duration::from_secs(2));
    loop {
        ticker.tick().await;
        if let Err(e) = storage.flush_pulls().await {
            tracing::warn!(error = %e, "writing pull counts failed; will retry");
        }
    }
}

/// Token auth: on when the config says so, or because users exist. Left to the
/// default, an open registry watches for its first user and turns auth on then, so
/// an operator who adds one is protected without a restart.
async fn open_auth(config: &Config, accounts: &Accounts) -> anyhow::Result<Arc<authz::Auth>> {
    let users = accounts.user_count().await?;
    let enabled = config.auth.enabled.unwrap_or(users > 0);
    if enabled {
        tracing::info!("token authentication on ({users} users)");
        let state = auth_state(config, accounts.clone()).await?;
        return Ok(Arc::new(authz::Auth::on(state)));
    }
    tracing::warn!("authentication is off: anyone can push and pull (add a user with `berthd user add` to turn it on)");
    let auth = Arc::new(authz::Auth::default());
    if config.auth.enabled.is_none() {
        let watch = watch_for_first_user(config.clone(), accounts.clone(), auth.clone());
        actix_web::rt::spawn(watch);
    }
    Ok(auth)
}

/// Polls (every second) until a user exists, then turns token authentication on.
async fn watch_for_first_user(config: Config, accounts: Accounts, auth: Arc<authz::Auth>) {
    let mut ticker = actix_web::rt::time::interval(std::time::Duration::from_secs(1));
    loop {
        ticker.tick().await;
        match accounts.user_count().await {
            Ok(0) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "checking for users failed; will retry");
                continue;
            }
        }
        match auth_state(&config, accounts.clone()).await {
            Ok(state) => {
                auth.turn_on(state);
                tracing::warn!("a user was added: token authentication is now on");
                return;
            }
            Err(e) => tracing::error!(error = %e, "turning authentication on failed; will retry"),
        }
    }
}

async fn auth_state(config: &Config, accounts: Accounts) -> anyhow::Result<Arc<authz::AuthState>> {
    let keys = accounts
        .signing_keys(config.auth.signing_key.as_deref())
        .await?;
    let tokens = berth_auth::TokenService::new(
        keys,
        "berth".into(),
        config.auth.service.clone(),
        config.auth.token_ttl_secs,
    );
    Ok(Arc::new(authz::AuthState {
        accounts,
        tokens,
        external_url: config.auth.external_url.clone(),
        signup: config.auth.signup,
    }))
}
