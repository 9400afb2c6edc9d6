//! berthd: composes configuration, storage and the HTTP routes into the registry server.

pub mod authz;
pub mod error;
pub mod http;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::middleware::{self, DefaultHeaders};
use actix_web::{web, App, HttpServer};
use berth_config::Config;
use berth_storage::Storage;

/// Shared by every request handler.
pub struct AppState {
    pub storage: Storage,
    /// Token authentication; `None` when the registry is open.
    pub auth: Option<Arc<authz::AuthState>>,
}

/// Opens storage and serves the registry on `config.listen` until SIGINT/SIGTERM,
/// letting in-flight requests finish.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let storage = Storage::open(&config).await?;
    let auth = open_auth(&config, &storage).await?;
    let state = web::Data::new(AppState { storage, auth });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::from_fn(authz::authorize))
            .wrap(DefaultHeaders::new().add(("Docker-Distribution-API-Version", "registry/2.0")))
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    })
    .bind(config.listen)?;
    let addrs: Vec<SocketAddr> = server.addrs();
    tracing::info!(
        "berthd listening on http://{} (data in {})",
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", http://"),
        config.data_dir.display()
    );
    server.run().await?;
    tracing::info!("berthd stopped");
    Ok(())
}

/// Token auth, when on: explicitly by config, or because users exist.
async fn open_auth(
    config: &Config,
    storage: &Storage,
) -> anyhow::Result<Option<Arc<authz::AuthState>>> {
    let db = storage.db().clone();
    berth_auth::migrate(&db).await?;
    let users = berth_auth::users::count(&db).await?;
    let enabled = config.auth.enabled.unwrap_or(users > 0);
    if !enabled {
        tracing::warn!("authentication is off: anyone can push and pull (add a user with `berthd user add` to turn it on)");
        return Ok(None);
    }
    tracing::info!("token authentication on ({users} users)");
    let keys = berth_auth::load_keys(config.auth.signing_key.as_deref(), &config.data_dir)?;
    let tokens = berth_auth::TokenService::new(
        keys,
        "berth".into(),
        config.auth.service.clone(),
        config.auth.token_ttl_secs,
    );
    Ok(Some(Arc::new(authz::AuthState {
        db,
        tokens,
        limiter: Default::default(),
        external_url: config.auth.external_url.clone(),
        signup: config.auth.signup,
    })))
}
