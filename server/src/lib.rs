//! berthd: composes configuration, storage and the HTTP routes into the registry server.

pub mod error;
pub mod http;
pub mod routes;

use std::net::SocketAddr;

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};
use berth_config::Config;
use berth_storage::Storage;

/// Shared by every request handler.
pub struct AppState {
    pub storage: Storage,
}

/// Opens storage and serves the registry on `config.listen` until SIGINT/SIGTERM,
/// letting in-flight requests finish.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let storage = Storage::open(&config).await?;
    let state = web::Data::new(AppState { storage });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
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
